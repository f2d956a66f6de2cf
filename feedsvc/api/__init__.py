"""Layer 4, HTTP: the Falcon app, its resources, middleware, errors and the OpenAPI document.
The only layer that imports falcon; imports only feedsvc.service and below."""
