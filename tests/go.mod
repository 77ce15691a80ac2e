module github.com/hermes-oci/hermes/tests

go 1.26.0

replace (
	github.com/hermes-oci/hermes => ../
	github.com/hermes-oci/hermes/tools => ../tools
)
