"""linevault's benchmarks: the black-box HTTP harness (``http``), in-process figures
(``micro``) and direct seeding of large databases (``seed``); see bench/README.md."""
