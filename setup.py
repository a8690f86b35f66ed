from setuptools import find_packages, setup

setup(
    name="nextjs-ws-gateway",
    version="0.1.0",
    description="Run a Next.js app and its WebSockets on one port: a Tornado gateway.",
    python_requires=">=3.11",
    packages=find_packages(include=["gateway", "gateway.*"]),
    install_requires=[
        "tornado>=6.5.6",
        "PyJWT[crypto]>=2.12",  # crypto: RS256/ES256 tokens
        "PyYAML>=6.0",
        "redis>=5.0",
        "brotli>=1.1",  # precompressed static assets; the gateway falls back to gzip without it
        "uvloop>=0.19; sys_platform != 'win32'",  # faster event loop (docs/benchmarks.md)
        "prometheus-client>=0.20",
        "hiredis>=2.0",  # faster Redis protocol parsing for redis-py
    ],
    extras_require={
        "deploy": ["supervisor>=4.2"],  # supervisord.conf: the container's process manager
        "test": [
            "pytest>=8.0",
            "pytest-tornado>=0.8.1",
            "websockets>=13",
            "playwright>=1.50",  # drives Debian's chromium (no browser download)
            "supervisor>=4.2",  # the supervisord.conf test runs the real thing
            "h11>=0.14",  # the reference HTTP/1.1 parser the attack suite checks framing against
            "ruff>=0.6",
            "mypy>=1.10",
            "types-PyYAML",
        ],
    },
    entry_points={"console_scripts": ["gateway=gateway.cli:main"]},
)
