# The project's own tests drive the plugin with pytester (in-process pytest runs).
pytest_plugins = ["pytester"]
