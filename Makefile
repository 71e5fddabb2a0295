# The two commands of the README: `make run` and `make test`. Both install what is missing first.
PORT ?= 8000
# daphne (the default) or uvicorn: both serve the same ASGI application (see README, Performance).
SERVER ?= daphne
PY := .venv/bin/python

.PHONY: run test bench setup setup-test

setup:
	@bin/setup run

setup-test:
	@bin/setup test

run: setup
	@$(PY) manage.py demosetup
	@echo "==> Open http://127.0.0.1:$(PORT)/ and log in as admin (Ctrl+C stops the portal)"
ifeq ($(SERVER),uvicorn)
	@exec .venv/bin/uvicorn --host 127.0.0.1 --port $(PORT) portal.asgi:application
else
	@exec $(PY) -m portal.daphne -b 127.0.0.1 -p $(PORT) portal.asgi:application
endif

# Django's deployment checks, with the settings of a deployment behind a TLS proxy.
DEPLOY_ENV := DEBUG=0 BEHIND_TLS_PROXY=1 ALLOWED_HOSTS=portal.example.com \
	SECRET_KEY=deploy-check-$$(head -c 48 /dev/urandom | base64 | tr -dc A-Za-z0-9)

test: setup-test
	@.venv/bin/ruff check --quiet . && .venv/bin/ruff format --check --quiet .
	@.venv/bin/mypy --no-error-summary
	@$(DEPLOY_ENV) $(PY) manage.py check --deploy --fail-level WARNING
	@node_modules/.bin/eslint --max-warnings 0 static/console
	@.venv/bin/pytest $(ARGS)

bench: setup-test
	@$(PY) -m bench $(ARGS)
