# The two commands of the README's Quick start.
#   make lab   set everything up, then open the course in JupyterLab on lab 00
#   make test  set everything up, then run the whole test suite, every notebook included (ci preset)
.PHONY: lab test setup

setup:
	bash scripts/setup.sh

lab: setup
	bash scripts/lab.sh

test: setup
	bash scripts/test.sh
