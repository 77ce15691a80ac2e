module github.com/hermes-oci/hermes/tools

go 1.26.0
