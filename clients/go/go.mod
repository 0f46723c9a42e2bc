module github.com/pglock/pglock/clients/go

go 1.17

require github.com/lib/pq v1.10.7

// Offline builds and tests on Debian (golang-github-lib-pq-dev); a module that imports this one
// ignores the replacement and gets lib/pq as usual.
replace github.com/lib/pq => /usr/share/gocode/src/github.com/lib/pq
