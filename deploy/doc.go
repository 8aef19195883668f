// Package deploy holds the Kubernetes manifests svcprobe ships (kustomize under base/) and the
// tests that keep them valid: every manifest decodes strictly into its Go type.
package deploy
