package api

// Envelope wraps every successful response: {"data": …}.
type Envelope[T any] struct {
	Data T `json:"data"`
}

// Error is the body of every failed response: {"error": {…}}.
type Error struct {
	// Status is the HTTP status code, repeated for clients that lose it.
	Status int `json:"status"`
	// Code is a stable machine-readable identifier such as "not_found",
	// "conflict", "invalid", "unauthenticated" or "forbidden".
	Code string `json:"code"`
	// Message says what went wrong and, where possible, how to fix it.
	Message string `json:"message"`
	// Fields maps request field names to what is wrong with each.
	Fields map[string]string `json:"fields,omitempty"`
}

// ErrorBody is the envelope of an Error.
type ErrorBody struct {
	Error Error `json:"error"`
}

func (e *Error) Error() string {
	s := e.Message
	for k, v := range e.Fields {
		s += "; " + k + ": " + v
	}
	return s
}

// Accepted is the data of a 202 response: the UPID of the task that does the
// work.
type Accepted struct {
	UPID string `json:"upid"`
}

// Version describes the daemon.
type Version struct {
	Version string `json:"version"`
	Node    string `json:"node"`
	API     string `json:"api"`
}
