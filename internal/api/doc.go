// Package api serves berth's REST API under /api/v1: the route table, the
// authentication and role middleware, the {"data": …} envelope and the
// structured errors, and the OpenAPI document generated from the same table.
// Handlers are thin: they decode, call a service and return its result; the
// services know nothing of HTTP.
package api
