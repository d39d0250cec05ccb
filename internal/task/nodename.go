package task

// ValidNodeName reports whether name can be a node name in a UPID: an
// RFC 1123 host name.
func ValidNodeName(name string) error { return validNode(name) }
