"""What every benchmark shares: where results go, the record of the machine, checkout and packages that made
them, timing and peak-RSS sampling, the JSON writer, Ray's start-up and the reuse of a prepared run."""
