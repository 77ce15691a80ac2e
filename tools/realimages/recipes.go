package realimages

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Port is where both workloads answer HTTP 200 (override with $PORT).
const Port = 8080

const rootPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// base is the rootfs every image starts from: what a `FROM debian:bookworm`
// gives (debootstrap minbase, main and non-free, no apt lists or caches).
func base() Step {
	return Step{
		Name:        "debootstrap --variant=minbase --components=main,non-free bookworm",
		Debootstrap: []string{"--components=main,non-free", "bookworm"},
		Script: "apt-get clean; rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/*.log\n" +
			"printf '#!/bin/sh\\nexit 101\\n' >/usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d",
	}
}

// aptStep is a `RUN apt-get install` step that leaves no apt lists behind.
func aptStep(pkgs ...string) Step {
	s := "apt-get update\napt-get install -y --no-install-recommends"
	for _, p := range pkgs {
		s += " " + p
	}
	s += "\napt-get clean\nrm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log"
	return Step{Name: "RUN apt-get install " + fmt.Sprint(pkgs), Script: s}
}

// Recipes returns every real image by name.
func Recipes() map[string]Recipe {
	return map[string]Recipe{"node": Node(), "ml": ML()}
}

// Names lists the recipes' names.
func Names() []string {
	var ns []string
	for n := range Recipes() {
		ns = append(ns, n)
	}
	sort.Strings(ns)
	return ns
}

// Lookup returns the recipe called name.
func Lookup(name string) (Recipe, error) {
	r, ok := Recipes()[name]
	if !ok {
		return Recipe{}, fmt.Errorf("%w %q (have %v)", ErrUnknown, name, Names())
	}
	return r, nil
}

// nodePackageJSON is the app's dependencies: a real web stack from the npm
// registry (server-side React with next, a NestJS API on express, the AWS
// S3 client, TypeScript at run time, the usual utility libraries).
const nodePackageJSON = `{
  "name": "hermes-bench-node",
  "version": "1.0.0",
  "private": true,
  "main": "server.js",
  "dependencies": {
    "@aws-sdk/client-s3": "3.658.1",
    "@nestjs/common": "10.4.4",
    "@nestjs/core": "10.4.4",
    "@nestjs/platform-express": "10.4.4",
    "date-fns": "2.30.0",
    "express": "4.21.0",
    "lodash": "4.17.21",
    "moment": "2.30.1",
    "next": "14.2.13",
    "react": "18.3.1",
    "react-dom": "18.3.1",
    "reflect-metadata": "0.2.2",
    "rxjs": "7.8.1",
    "typescript": "5.6.2"
  }
}
`

// nodeServer requires the framework stack, builds a NestJS app on express
// and answers HTTP 200 with a server-rendered React page.
const nodeServer = `'use strict';
const t0 = Date.now();
require('reflect-metadata');
const React = require('react');
const { renderToString } = require('react-dom/server');
const next = require('next');
const { NestFactory } = require('@nestjs/core');
const common = require('@nestjs/common');
require('@nestjs/platform-express');
require('express');
const _ = require('lodash');
const dfns = require('date-fns');
const moment = require('moment');
const rxjs = require('rxjs');
require('rxjs/operators');
const { S3Client } = require('@aws-sdk/client-s3');
const ts = require('typescript');

class AppModule {}
common.Module({})(AppModule);

(async () => {
  next({ dev: false, dir: __dirname });
  new S3Client({ region: 'us-east-1' });
  ts.transpileModule('const x: number = 1', {});
  const app = await NestFactory.create(AppModule, { logger: false });
  const page = renderToString(React.createElement('h1', null,
    'hello ' + _.camelCase('from node') + ' ' + dfns.formatISO(0) + ' ' + moment(0).utc().year()));
  const sub = await rxjs.firstValueFrom(rxjs.of(page));
  app.getHttpAdapter().get('/', (req, res) => res.status(200).send(sub));
  const port = Number(process.env.PORT || 8080);
  await app.listen(port, '0.0.0.0');
  console.log('ready on ' + port + ' after ' + (Date.now() - t0) + ' ms');
})().catch((e) => { console.error(e); process.exit(1); });
`

// Node is Debian bookworm + Debian's nodejs + an npm-installed app.
func Node() Recipe {
	return Recipe{
		Name: "node",
		Steps: []Step{
			base(),
			aptStep("nodejs", "ca-certificates"),
			{
				Name:    "COPY package.json; RUN npm install --omit=dev (npm registry)",
				HostKey: "npm-install-v1\x00" + nodePackageJSON,
				Host:    npmInstall,
			},
			{Name: "COPY server.js", Files: map[string]string{"app/server.js": nodeServer}},
		},
		Config: v1.Config{
			Env:          []string{rootPath, "NODE_ENV=production", fmt.Sprintf("PORT=%d", Port)},
			Cmd:          []string{"/usr/bin/node", "/app/server.js"},
			WorkingDir:   "/app",
			ExposedPorts: map[string]struct{}{fmt.Sprintf("%d/tcp", Port): {}},
		},
	}
}

// npmInstall runs the host's npm (Debian's) against the npm registry into
// /app of the image: the builder stage of a multi-stage build.
func npmInstall(ctx context.Context, upper, merged string) error {
	app := filepath.Join(merged, "app")
	if err := os.MkdirAll(app, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(app, "package.json"), []byte(nodePackageJSON), 0o644); err != nil {
		return err
	}
	cache := filepath.Join(Dir(), "npm-cache")
	return run(ctx, app, append(os.Environ(), "npm_config_cache="+cache), "npm", "install", "--omit=dev",
		"--no-audit", "--no-fund", "--no-update-notifier", "--loglevel=error")
}

// cudaLibs are the CUDA 11.8 runtime libraries of Debian's non-free
// component that a GPU service loads at start.
var cudaLibs = []string{
	"libcudart11.0", "libcublas11", "libcublaslt11", "libcusolver11", "libcusparse11", "libcufft10", "libcurand10",
	"libnppc11", "libnppial11", "libnppicc11", "libnppidei11", "libnppif11", "libnppig11", "libnppim11",
	"libnppist11", "libnppisu11", "libnppitc11", "libnpps11",
}

// mlServer imports the Python ML stack, opens the CUDA libraries as a GPU
// service does at start (ctypes.CDLL), touches each library once and
// answers HTTP 200.
const mlServer = `import ctypes, glob, http.server, os, sys, time
t0 = time.time()
import torch, torch.nn
import scipy, scipy.linalg, scipy.sparse, scipy.optimize
import pandas as pd
import sklearn, sklearn.linear_model, sklearn.ensemble
libdir = "/usr/lib/x86_64-linux-gnu"
opened = []
for pat in ["libcudart.so.11*", "libcublasLt.so.11", "libcublas.so.11", "libcusparse.so.11", "libcusolver.so.11",
            "libcufft.so.10", "libcurand.so.10", "libnpp*.so.11"]:
    paths = sorted(glob.glob(os.path.join(libdir, pat)))
    if not paths:
        sys.exit("missing CUDA library " + pat)
    for p in paths:
        ctypes.CDLL(p)
        opened.append(os.path.basename(p))
x = torch.randn(128, 128)
y = (x @ x).sum().item()
df = pd.DataFrame({"a": range(100), "b": range(100)})
m = sklearn.linear_model.LinearRegression().fit(df[["a"]], df["b"])
z = scipy.linalg.inv([[2.0, 0.0], [0.0, 2.0]])
body = ("ok torch %s scipy %s pandas %s sklearn %s cuda libs %d\n" % (
    torch.__version__, scipy.__version__, pd.__version__, sklearn.__version__, len(opened))).encode()

class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass

port = int(os.environ.get("PORT", "8080"))
srv = http.server.HTTPServer(("0.0.0.0", port), H)
print("ready on %d after %.1f s" % (port, time.time() - t0), flush=True)
srv.serve_forever()
`

// ML is Debian bookworm + Debian's PyTorch, SciPy, pandas, scikit-learn and
// the CUDA 11.8 runtime libraries.
func ML() Recipe {
	return Recipe{
		Name: "ml",
		Steps: []Step{
			base(),
			aptStep("python3", "python3-torch", "python3-scipy", "python3-pandas", "python3-sklearn"),
			aptStep(cudaLibs...),
			{Name: "COPY server.py", Files: map[string]string{"app/server.py": mlServer}},
		},
		Config: v1.Config{
			Env:          []string{rootPath, fmt.Sprintf("PORT=%d", Port)},
			Cmd:          []string{"/usr/bin/python3", "/app/server.py"},
			WorkingDir:   "/app",
			ExposedPorts: map[string]struct{}{fmt.Sprintf("%d/tcp", Port): {}},
		},
	}
}
