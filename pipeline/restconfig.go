package pipeline

import (
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
)

// TuneRESTConfig sets what the exporter asks of the API server for every client it builds (the
// exporter's, and the bench's simulated node agents): protobuf for the built-in kinds it lists
// and watches, JSON accepted as a fallback. A node agent on every node receives every change of
// the Services, EndpointSlices and Pods it watches; protobuf makes each event several times
// smaller than JSON on the wire and cheaper to write and to decode (kube-state-metrics and the
// kubelet do the same).
func TuneRESTConfig(rc *rest.Config) {
	rc.ContentType = runtime.ContentTypeProtobuf
	rc.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
}
