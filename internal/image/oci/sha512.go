package oci

import (
	"crypto/sha512"
	"hash"
)

func newSHA512() hash.Hash { return sha512.New() }
