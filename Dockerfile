# The aixds container image, for those who build with Docker (BuildKit):
#
#   docker build -t aixds:0.1.0 --build-arg VERSION=0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" \
#       --build-arg SOURCE=https://your.git.host/aixds .
#
# hack/image.sh builds the same image without a daemon: it reads the final stage below (ARG,
# LABEL, USER, EXPOSE, ENTRYPOINT, CMD) for the image config and fills the root filesystem with
# the same hack/image-rootfs.sh, so the two cannot drift apart. Keep the final stage to those
# instructions; hack/image.sh rejects anything else.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin aixds \
 && bash hack/image-rootfs.sh target/release/aixds /rootfs

# No shell, no package manager: the binary, the C libraries it links, the nonroot user, CA
# certificates and /tmp.
FROM scratch
COPY --from=build /rootfs /
ARG VERSION
ARG REVISION
ARG SOURCE
LABEL org.opencontainers.image.title="aixds" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}"
# nonroot, the user the chart's podSecurityContext runs as.
USER 65532:65532
# `serve`'s gRPC (xDS and the translation ext_proc), endpoint picker and admin ports.
EXPOSE 18000/tcp 9002/tcp 19000/tcp
ENTRYPOINT ["/aixds"]
CMD ["serve"]
