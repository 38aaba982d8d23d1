{{/* Labels every object of the chart carries; "component" names the control-plane part. */}}
{{- define "mesh.labels" -}}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: mesh
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{ include "mesh.selector" . }}
{{- with .root.Values.global.labels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The labels that select a component's pods. */}}
{{- define "mesh.selector" -}}
app: {{ .name }}
app.kubernetes.io/name: {{ .name }}
{{- end }}

{{/* <hub>/<image>:<tag> */}}
{{- define "mesh.image" -}}
{{- printf "%s/%s:%s" .root.Values.global.hub .image (.root.Values.global.tag | default .root.Chart.AppVersion) }}
{{- end }}

{{/* The Service DNS name of a component: <name>.<namespace>.svc */}}
{{- define "mesh.svc" -}}
{{- printf "%s.%s.svc" .name .root.Release.Namespace }}
{{- end }}

{{/* The pod-level fields shared by the three Deployments. */}}
{{- define "mesh.podCommon" -}}
{{- $v := index .root.Values .component }}
serviceAccountName: {{ .name }}
securityContext:
  {{- toYaml .root.Values.global.podSecurityContext | nindent 2 }}
{{- with .root.Values.global.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* A PodDisruptionBudget for a component. */}}
{{- define "mesh.pdb" -}}
{{- $v := index .root.Values .component }}
{{- if $v.podDisruptionBudget.enabled }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ .name }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "mesh.labels" . | nindent 4 }}
spec:
  maxUnavailable: {{ $v.podDisruptionBudget.maxUnavailable }}
  # A pod that is not ready protects nothing: let a drain evict it.
  unhealthyPodEvictionPolicy: AlwaysAllow
  selector:
    matchLabels:
      {{- include "mesh.selector" . | nindent 6 }}
{{- end }}
{{- end }}

{{/* Namespaces the webhooks never see, as in Istio: the cluster's own and the mesh's. */}}
{{- define "mesh.excludedNamespaces" -}}
- key: kubernetes.io/metadata.name
  operator: NotIn
  values: [kube-system, kube-public, kube-node-lease, {{ .Release.Namespace }}]
{{- end }}
