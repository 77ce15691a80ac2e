// Package smoke proves the test harness: each real component starts, does its
// basic job with the clients users use, and stops without leftovers.
package smoke
