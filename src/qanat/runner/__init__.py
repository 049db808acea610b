"""The local runner behind ``qanat up``: a supervisor of service processes.

Each service instance is its own OS process (uvicorn on a socket the
supervisor opened, so ports never race). The supervisor waits for readiness,
restarts crashed instances with backoff, scales live, and stops everything
gracefully. Other ``qanat`` commands talk to it over a Unix socket in the
state directory.
"""
