"""Conformance: the user and the judge. Cuts and cases, the runner, verdicts, reports, the matrix and
the preflight; they drive the server from outside, as a user speaking would. Imports anything below,
`replay.clients` included."""
