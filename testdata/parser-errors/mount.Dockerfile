FROM busybox
RUN --mount=type=cache,target=/x,foo=bar echo
