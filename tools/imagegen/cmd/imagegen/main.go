// Command imagegen builds a deterministic synthetic image and pushes it.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "imagegen: not implemented yet")
	os.Exit(2)
}
