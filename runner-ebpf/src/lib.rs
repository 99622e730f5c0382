// Host-side library target so `runner` can name this crate as a
// build-dependency (cargo then rebuilds the object when it changes).
#![no_std]
