# Kova operator image: `kova run` as a non-root user on a slim Python, no compilers in the final stage.
# Build:  docker build -t kova:0.1.0 .      (CI, which has no container engine, checks the same steps:
# the wheel is built, installed into a fresh venv and run; see tests/integration/test_packaging.py)

FROM python:3.11-slim AS build
WORKDIR /src
RUN pip install --no-cache-dir build==1.6.1
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN python -m build --wheel --outdir /dist

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin kova
COPY --from=build /dist/ /tmp/dist/
# Dependencies come as wheels (pydantic-core, aiohttp, ...): nothing is compiled here.
RUN pip install --only-binary=:all: /tmp/dist/*.whl && rm -rf /tmp/dist
USER 10001:10001
EXPOSE 8080 9090
ENTRYPOINT ["kova"]
CMD ["run"]
