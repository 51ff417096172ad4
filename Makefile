# The two commands of the README's Quick start.
#   make lab   set everything up, then open the course in JupyterLab on lab 00
#   make test  set everything up (the browser test's chromium and playwright too), then run the whole test suite,
#              every notebook included (ci preset)
.PHONY: lab test setup browser

setup:
	bash scripts/setup.sh

browser: setup
	bash scripts/install_browser.sh

lab: setup
	bash scripts/lab.sh

test: setup browser
	bash scripts/test.sh
