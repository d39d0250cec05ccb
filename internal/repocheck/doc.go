// Package repocheck holds repository-wide tests: every Go package has
// exactly one package comment, and the generated references in docs/ match
// the code. It has no code of its own.
package repocheck
