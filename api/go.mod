module github.com/hermes-oci/hermes/api

go 1.26.0
