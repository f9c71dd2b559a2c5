// Package queueing holds the test of the build queue through a running
// manager: eight ImageBuilds in two namespaces share one build slot
// (--max-concurrent-builds=1), each shows Queued with its position, the
// namespaces take turns, and a Ready object's drift poll completes while
// builds hold the slot. It is its own package because it needs a manager
// with one slot and layer requests it can hold, while the controllers
// package's suite runs a four-slot manager on its control plane that would
// pick the same ImageBuilds up.
package queueing
