{{/* Labels every object of the chart carries. */}}
{{- define "base.labels" -}}
app.kubernetes.io/name: mesh-base
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mesh
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- with .Values.labels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
The served kinds: name, plural, short names, whether the kind belongs to the security
group, the schema template of its spec, and extra printer columns.
*/}}
{{- define "base.kinds" -}}
- {kind: VirtualService, plural: virtualservices, short: [vs], security: false, columns: [{name: Gateways, type: string, jsonPath: .spec.gateways, description: The names of gateways and sidecars that should apply these routes}, {name: Hosts, type: string, jsonPath: .spec.hosts, description: The destination hosts to which traffic is being sent}]}
- {kind: DestinationRule, plural: destinationrules, short: [dr], security: false, columns: [{name: Host, type: string, jsonPath: .spec.host, description: The name of a service from the service registry}]}
- {kind: ServiceEntry, plural: serviceentries, short: [se], security: false, columns: [{name: Hosts, type: string, jsonPath: .spec.hosts, description: The hosts associated with the ServiceEntry}, {name: Location, type: string, jsonPath: .spec.location, description: Whether the service is external to the mesh or part of the mesh (MESH_EXTERNAL or MESH_INTERNAL)}, {name: Resolution, type: string, jsonPath: .spec.resolution, description: Service resolution mode for the hosts (NONE, STATIC, or DNS)}]}
- {kind: WorkloadEntry, plural: workloadentries, short: [we], security: false, columns: [{name: Address, type: string, jsonPath: .spec.address, description: Address associated with the network endpoint}]}
- {kind: WorkloadGroup, plural: workloadgroups, short: [wg], security: false, columns: []}
- {kind: Sidecar, plural: sidecars, short: [], security: false, columns: []}
- {kind: Gateway, plural: gateways, short: [gw], security: false, columns: []}
- {kind: PeerAuthentication, plural: peerauthentications, short: [pa], security: true, columns: [{name: Mode, type: string, jsonPath: .spec.mtls.mode, description: Defines the mTLS mode used for peer authentication}]}
- {kind: AuthorizationPolicy, plural: authorizationpolicies, short: [ap], security: true, columns: [{name: Action, type: string, jsonPath: .spec.action, description: The operation to take}]}
- {kind: RequestAuthentication, plural: requestauthentications, short: [ra], security: true, columns: []}
{{- end }}

{{/* The API groups to install: [{networking, security, category}]. */}}
{{- define "base.groups" -}}
{{- if .Values.meshGroup.enabled }}
- {networking: networking.mesh.dev, security: security.mesh.dev, category: mesh-dev}
{{- end }}
{{- if .Values.istioGroup.enabled }}
- {networking: networking.istio.io, security: security.istio.io, category: istio-io}
{{- end }}
{{- end }}
