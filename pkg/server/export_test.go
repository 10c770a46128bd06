package server

// PollerBuilt says whether the idle poller is built on this platform.
const PollerBuilt = pollerBuilt
