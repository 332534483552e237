FROM busybox
	RUN echo \
   && cp --bad \
   x
HEALTHCHECK --interval=-1s CMD true
