# The browser test (web/browser_test.go) drives Debian's chromium headless. Included from the
# top-level Makefile: `-include web/web.mk`, and make `unit` depend on browser-deps where the
# machine may install packages (CI runs as root in a Debian image).
.PHONY: browser-deps browser-test screenshot

## browser-deps: install Debian's chromium when it is missing.
browser-deps:
	command -v chromium || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

## browser-test: the status page in headless chromium; screenshots land in $$ARTIFACTS or web/testdata/artifacts.
browser-test: browser-deps
	$(GO) test -count=1 -run 'TestBrowser' ./web/

## screenshot: regenerate docs/status-page.png (the README's picture) from the demo fixture.
screenshot: browser-deps
	$(GO) test -count=1 -run 'TestREADMEScreenshot' ./web/ -update-screenshot
