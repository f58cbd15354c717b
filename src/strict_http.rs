//! gunicorn's HTTP/1 strictness in front of hyper (work in progress).
