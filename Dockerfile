# A static binary on an empty base: nothing to patch, nothing to pull (no registry is needed to
# build it). Build the binary first: `make build` (CGO_ENABLED=0), then `make image`.
FROM scratch
ARG VERSION=dev
LABEL org.opencontainers.image.title="svcprobe" \
      org.opencontainers.image.description="Runs the Kubernetes Debug Services runbook against every Service" \
      org.opencontainers.image.source="https://github.com/svcprobe/svcprobe" \
      org.opencontainers.image.version="${VERSION}"
COPY bin/svcprobe /bin/svcprobe
USER 65534:65534
EXPOSE 9817
ENTRYPOINT ["/bin/svcprobe"]
