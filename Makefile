# The two commands of the README's Quick start.
#   make lab   set everything up, then open the course in JupyterLab on lab 00
#   make test  set everything up (the browser test's chromium and playwright too), then run the whole test suite,
#              every notebook included (ci preset)
# For course authors:
#   make test-fast  lint and the unit tests not marked slow: no notebooks, no browser (under 2 minutes)
.PHONY: lab test test-fast setup browser

setup:
	bash scripts/setup.sh

browser: setup
	bash scripts/install_browser.sh

lab: setup
	bash scripts/lab.sh

test: setup browser
	bash scripts/test.sh

test-fast: setup
	bash scripts/test.sh --fast
