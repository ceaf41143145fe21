"""The black-box harness: servers started as processes and driven over HTTP on 127.0.0.1."""
