// Package check holds tests only; see tools.go.
package check
