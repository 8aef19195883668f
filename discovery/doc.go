// Package discovery owns the view of the cluster that svcprobe probes: shared informers on
// Services, EndpointSlices and Pods (trimmed by a transform to what the stages need), the
// svcprobe.io/ annotations, sharding, and the Target model built from them.
//
// It only reads the API; it never probes, and it never writes metrics. Targets are pushed to a
// Sink (the scheduler) as they change, so an endpoint change reaches the metrics through an event,
// not through the next probe round.
package discovery
