{{- /*
OpenAPI v3 schemas of the spec of each kind, structural as the API server requires. Field
names and types follow Istio's API; the deepest, rarely used parts (fault injection details,
connection pool tuning, locality load balancing, tunnels) keep their fields with
x-kubernetes-preserve-unknown-fields, and the mesh's validating webhook (the same validation
as `meshctl validate`) checks them.
*/ -}}

{{- define "schema.any" -}}
type: object
x-kubernetes-preserve-unknown-fields: true
{{- end }}

{{- define "schema.strings" -}}
type: array
items:
  type: string
{{- end }}

{{- define "schema.stringMap" -}}
type: object
additionalProperties:
  type: string
{{- end }}

{{- define "schema.duration" -}}
type: string
description: A duration such as 1s, 500ms or 1m30s.
{{- end }}

{{- define "schema.portNumber" -}}
type: integer
minimum: 0
maximum: 4294967295
{{- end }}

{{- define "schema.stringMatch" -}}
type: object
description: One of exact, prefix or regex (RE2).
properties:
  exact:
    type: string
  prefix:
    type: string
  regex:
    type: string
{{- end }}

{{- define "schema.stringMatchMap" -}}
type: object
additionalProperties:
  {{- include "schema.stringMatch" . | nindent 2 }}
{{- end }}

{{- define "schema.percent" -}}
type: object
properties:
  value:
    type: number
    format: double
{{- end }}

{{- define "schema.portSelector" -}}
type: object
properties:
  number:
    {{- include "schema.portNumber" . | nindent 4 }}
{{- end }}

{{- define "schema.networkingSelector" -}}
type: object
description: Pods or VMs this applies to, by labels; all in the namespace when absent.
properties:
  labels:
    {{- include "schema.stringMap" . | nindent 4 }}
{{- end }}

{{- define "schema.securitySelector" -}}
type: object
description: Pods or VMs this policy applies to, by labels; all in the namespace when absent.
properties:
  matchLabels:
    {{- include "schema.stringMap" . | nindent 4 }}
{{- end }}

{{- define "schema.targetRef" -}}
type: object
required: [kind, name]
properties:
  group:
    type: string
  kind:
    type: string
  name:
    type: string
  namespace:
    type: string
{{- end }}

{{- define "schema.destination" -}}
type: object
required: [host]
properties:
  host:
    type: string
    description: A service in the registry (short or fully qualified name) or a ServiceEntry host.
  subset:
    type: string
    description: A subset named in the host's DestinationRule.
  port:
    {{- include "schema.portSelector" . | nindent 4 }}
{{- end }}

{{- define "schema.headerOperations" -}}
type: object
properties:
  set:
    {{- include "schema.stringMap" . | nindent 4 }}
  add:
    {{- include "schema.stringMap" . | nindent 4 }}
  remove:
    {{- include "schema.strings" . | nindent 4 }}
{{- end }}

{{- define "schema.headers" -}}
type: object
properties:
  request:
    {{- include "schema.headerOperations" . | nindent 4 }}
  response:
    {{- include "schema.headerOperations" . | nindent 4 }}
{{- end }}

{{- define "schema.port" -}}
type: object
required: [number]
properties:
  number:
    {{- include "schema.portNumber" . | nindent 4 }}
  protocol:
    type: string
    description: HTTP, HTTPS, GRPC, HTTP2, MONGO, TCP or TLS.
  name:
    type: string
  targetPort:
    {{- include "schema.portNumber" . | nindent 4 }}
{{- end }}

{{- define "schema.serverTls" -}}
type: object
properties:
  httpsRedirect:
    type: boolean
  mode:
    type: string
    enum: [PASSTHROUGH, SIMPLE, MUTUAL, AUTO_PASSTHROUGH, ISTIO_MUTUAL, OPTIONAL_MUTUAL]
  serverCertificate:
    type: string
  privateKey:
    type: string
  caCertificates:
    type: string
  caCrl:
    type: string
  credentialName:
    type: string
  credentialNames:
    {{- include "schema.strings" . | nindent 4 }}
  subjectAltNames:
    {{- include "schema.strings" . | nindent 4 }}
  verifyCertificateSpki:
    {{- include "schema.strings" . | nindent 4 }}
  verifyCertificateHash:
    {{- include "schema.strings" . | nindent 4 }}
  minProtocolVersion:
    type: string
    enum: [TLS_AUTO, TLSV1_0, TLSV1_1, TLSV1_2, TLSV1_3]
  maxProtocolVersion:
    type: string
    enum: [TLS_AUTO, TLSV1_0, TLSV1_1, TLSV1_2, TLSV1_3]
  cipherSuites:
    {{- include "schema.strings" . | nindent 4 }}
  tlsCertificates:
    type: array
    items:
      {{- include "schema.any" . | nindent 6 }}
{{- end }}

{{- define "schema.clientTls" -}}
type: object
properties:
  mode:
    type: string
    enum: [DISABLE, SIMPLE, MUTUAL, ISTIO_MUTUAL]
  clientCertificate:
    type: string
  privateKey:
    type: string
  caCertificates:
    type: string
  caCrl:
    type: string
  credentialName:
    type: string
  subjectAltNames:
    {{- include "schema.strings" . | nindent 4 }}
  sni:
    type: string
  insecureSkipVerify:
    type: boolean
{{- end }}

{{- define "schema.loadBalancer" -}}
type: object
properties:
  simple:
    type: string
    enum: [UNSPECIFIED, LEAST_CONN, RANDOM, PASSTHROUGH, ROUND_ROBIN, LEAST_REQUEST]
  consistentHash:
    {{- include "schema.any" . | nindent 4 }}
  localityLbSetting:
    {{- include "schema.any" . | nindent 4 }}
  warmupDurationSecs:
    {{- include "schema.duration" . | nindent 4 }}
  warmup:
    {{- include "schema.any" . | nindent 4 }}
{{- end }}

{{- define "schema.outlierDetection" -}}
type: object
properties:
  splitExternalLocalOriginErrors:
    type: boolean
  consecutiveLocalOriginFailures:
    type: integer
    nullable: true
  consecutiveGatewayErrors:
    type: integer
    nullable: true
  consecutive5xxErrors:
    type: integer
    nullable: true
  consecutiveErrors:
    type: integer
  interval:
    {{- include "schema.duration" . | nindent 4 }}
  baseEjectionTime:
    {{- include "schema.duration" . | nindent 4 }}
  maxEjectionPercent:
    type: integer
  minHealthPercent:
    type: integer
{{- end }}

{{- define "schema.trafficPolicyFields" -}}
loadBalancer:
  {{- include "schema.loadBalancer" . | nindent 2 }}
connectionPool:
  type: object
  properties:
    tcp:
      {{- include "schema.any" . | nindent 6 }}
    http:
      {{- include "schema.any" . | nindent 6 }}
outlierDetection:
  {{- include "schema.outlierDetection" . | nindent 2 }}
tls:
  {{- include "schema.clientTls" . | nindent 2 }}
{{- end }}

{{- define "schema.trafficPolicy" -}}
type: object
properties:
  {{- include "schema.trafficPolicyFields" . | nindent 2 }}
  portLevelSettings:
    type: array
    items:
      type: object
      properties:
        port:
          {{- include "schema.portSelector" . | nindent 10 }}
        {{- include "schema.trafficPolicyFields" . | nindent 8 }}
  tunnel:
    {{- include "schema.any" . | nindent 4 }}
  proxyProtocol:
    {{- include "schema.any" . | nindent 4 }}
{{- end }}

{{- define "schema.workloadEntry" -}}
type: object
properties:
  address:
    type: string
  ports:
    type: object
    additionalProperties:
      {{- include "schema.portNumber" . | nindent 6 }}
  labels:
    {{- include "schema.stringMap" . | nindent 4 }}
  network:
    type: string
  locality:
    type: string
  weight:
    type: integer
  serviceAccount:
    type: string
{{- end }}

{{- define "schema.l4Match" -}}
destinationSubnets:
  {{- include "schema.strings" . | nindent 2 }}
port:
  {{- include "schema.portNumber" . | nindent 2 }}
sourceLabels:
  {{- include "schema.stringMap" . | nindent 2 }}
gateways:
  {{- include "schema.strings" . | nindent 2 }}
sourceNamespace:
  type: string
{{- end }}

{{- define "schema.routeDestinations" -}}
type: array
items:
  type: object
  required: [destination]
  properties:
    destination:
      {{- include "schema.destination" . | nindent 6 }}
    weight:
      type: integer
      format: int32
{{- end }}

{{- define "schema.VirtualService" -}}
type: object
description: Routing rules for traffic to a set of hosts.
properties:
  hosts:
    {{- include "schema.strings" . | nindent 4 }}
  gateways:
    {{- include "schema.strings" . | nindent 4 }}
  exportTo:
    {{- include "schema.strings" . | nindent 4 }}
  http:
    type: array
    items:
      type: object
      properties:
        name:
          type: string
        match:
          type: array
          items:
            type: object
            properties:
              name:
                type: string
              uri:
                {{- include "schema.stringMatch" . | nindent 16 }}
              scheme:
                {{- include "schema.stringMatch" . | nindent 16 }}
              method:
                {{- include "schema.stringMatch" . | nindent 16 }}
              authority:
                {{- include "schema.stringMatch" . | nindent 16 }}
              headers:
                {{- include "schema.stringMatchMap" . | nindent 16 }}
              withoutHeaders:
                {{- include "schema.stringMatchMap" . | nindent 16 }}
              queryParams:
                {{- include "schema.stringMatchMap" . | nindent 16 }}
              port:
                {{- include "schema.portNumber" . | nindent 16 }}
              sourceLabels:
                {{- include "schema.stringMap" . | nindent 16 }}
              gateways:
                {{- include "schema.strings" . | nindent 16 }}
              ignoreUriCase:
                type: boolean
              sourceNamespace:
                type: string
              statPrefix:
                type: string
        route:
          type: array
          items:
            type: object
            required: [destination]
            properties:
              destination:
                {{- include "schema.destination" . | nindent 16 }}
              weight:
                type: integer
                format: int32
              headers:
                {{- include "schema.headers" . | nindent 16 }}
        redirect:
          {{- include "schema.any" . | nindent 10 }}
        directResponse:
          type: object
          required: [status]
          properties:
            status:
              type: integer
            body:
              type: object
              properties:
                string:
                  type: string
                bytes:
                  type: string
                  format: binary
        delegate:
          type: object
          properties:
            name:
              type: string
            namespace:
              type: string
        rewrite:
          type: object
          properties:
            uri:
              type: string
            authority:
              type: string
            uriRegexRewrite:
              type: object
              properties:
                match:
                  type: string
                rewrite:
                  type: string
        timeout:
          {{- include "schema.duration" . | nindent 10 }}
        retries:
          type: object
          properties:
            attempts:
              type: integer
              format: int32
            perTryTimeout:
              {{- include "schema.duration" . | nindent 14 }}
            retryOn:
              type: string
            retryRemoteLocalities:
              type: boolean
              nullable: true
        fault:
          type: object
          properties:
            delay:
              {{- include "schema.any" . | nindent 14 }}
            abort:
              {{- include "schema.any" . | nindent 14 }}
        mirror:
          {{- include "schema.destination" . | nindent 10 }}
        mirrors:
          type: array
          items:
            type: object
            required: [destination]
            properties:
              destination:
                {{- include "schema.destination" . | nindent 16 }}
              percentage:
                {{- include "schema.percent" . | nindent 16 }}
        mirrorPercent:
          type: integer
          nullable: true
        mirrorPercentage:
          {{- include "schema.percent" . | nindent 10 }}
        corsPolicy:
          {{- include "schema.any" . | nindent 10 }}
        headers:
          {{- include "schema.headers" . | nindent 10 }}
  tls:
    type: array
    items:
      type: object
      required: [match]
      properties:
        match:
          type: array
          items:
            type: object
            required: [sniHosts]
            properties:
              sniHosts:
                {{- include "schema.strings" . | nindent 16 }}
              {{- include "schema.l4Match" . | nindent 14 }}
        route:
          {{- include "schema.routeDestinations" . | nindent 10 }}
  tcp:
    type: array
    items:
      type: object
      properties:
        match:
          type: array
          items:
            type: object
            properties:
              {{- include "schema.l4Match" . | nindent 14 }}
        route:
          {{- include "schema.routeDestinations" . | nindent 10 }}
{{- end }}

{{- define "schema.DestinationRule" -}}
type: object
description: Policies that apply to traffic for a service after routing has occurred.
required: [host]
properties:
  host:
    type: string
  trafficPolicy:
    {{- include "schema.trafficPolicy" . | nindent 4 }}
  subsets:
    type: array
    items:
      type: object
      required: [name]
      properties:
        name:
          type: string
        labels:
          {{- include "schema.stringMap" . | nindent 10 }}
        trafficPolicy:
          {{- include "schema.trafficPolicy" . | nindent 10 }}
  exportTo:
    {{- include "schema.strings" . | nindent 4 }}
  workloadSelector:
    {{- include "schema.networkingSelector" . | nindent 4 }}
{{- end }}

{{- define "schema.ServiceEntry" -}}
type: object
description: Entries in the mesh's service registry, for services outside it or VMs.
required: [hosts]
properties:
  hosts:
    {{- include "schema.strings" . | nindent 4 }}
  addresses:
    {{- include "schema.strings" . | nindent 4 }}
  ports:
    type: array
    items:
      {{- include "schema.port" . | nindent 6 }}
  location:
    type: string
    enum: [MESH_EXTERNAL, MESH_INTERNAL]
  resolution:
    type: string
    enum: [NONE, STATIC, DNS, DNS_ROUND_ROBIN]
  endpoints:
    type: array
    items:
      {{- include "schema.workloadEntry" . | nindent 6 }}
  workloadSelector:
    {{- include "schema.networkingSelector" . | nindent 4 }}
  exportTo:
    {{- include "schema.strings" . | nindent 4 }}
  subjectAltNames:
    {{- include "schema.strings" . | nindent 4 }}
{{- end }}

{{- define "schema.WorkloadEntry" -}}
{{- include "schema.workloadEntry" . }}
description: A non-Kubernetes workload (a VM or bare-metal host) and its properties.
{{- end }}

{{- define "schema.WorkloadGroup" -}}
type: object
description: A template for WorkloadEntries of workloads that register themselves.
required: [template]
properties:
  metadata:
    type: object
    properties:
      labels:
        {{- include "schema.stringMap" . | nindent 8 }}
      annotations:
        {{- include "schema.stringMap" . | nindent 8 }}
  template:
    {{- include "schema.workloadEntry" . | nindent 4 }}
  probe:
    {{- include "schema.any" . | nindent 4 }}
{{- end }}

{{- define "schema.Sidecar" -}}
type: object
description: The ingress and egress of a workload's proxy.
properties:
  workloadSelector:
    {{- include "schema.networkingSelector" . | nindent 4 }}
  ingress:
    type: array
    items:
      type: object
      required: [port]
      properties:
        port:
          {{- include "schema.port" . | nindent 10 }}
        bind:
          type: string
        captureMode:
          type: string
          enum: [DEFAULT, IPTABLES, NONE]
        defaultEndpoint:
          type: string
        tls:
          {{- include "schema.serverTls" . | nindent 10 }}
        connectionPool:
          {{- include "schema.any" . | nindent 10 }}
  egress:
    type: array
    items:
      type: object
      required: [hosts]
      properties:
        port:
          {{- include "schema.port" . | nindent 10 }}
        bind:
          type: string
        captureMode:
          type: string
          enum: [DEFAULT, IPTABLES, NONE]
        hosts:
          {{- include "schema.strings" . | nindent 10 }}
  outboundTrafficPolicy:
    type: object
    properties:
      mode:
        type: string
        enum: [REGISTRY_ONLY, ALLOW_ANY]
      egressProxy:
        {{- include "schema.destination" . | nindent 8 }}
  inboundConnectionPool:
    {{- include "schema.any" . | nindent 4 }}
{{- end }}

{{- define "schema.Gateway" -}}
type: object
description: A load balancer at the edge of the mesh.
properties:
  selector:
    {{- include "schema.stringMap" . | nindent 4 }}
  servers:
    type: array
    items:
      type: object
      required: [port, hosts]
      properties:
        port:
          {{- include "schema.port" . | nindent 10 }}
        bind:
          type: string
        hosts:
          {{- include "schema.strings" . | nindent 10 }}
        tls:
          {{- include "schema.serverTls" . | nindent 10 }}
        defaultEndpoint:
          type: string
        name:
          type: string
{{- end }}

{{- define "schema.mtls" -}}
type: object
properties:
  mode:
    type: string
    enum: [UNSET, DISABLE, PERMISSIVE, STRICT]
{{- end }}

{{- define "schema.PeerAuthentication" -}}
type: object
description: Whether workloads accept plain text, mTLS, or both.
properties:
  selector:
    {{- include "schema.securitySelector" . | nindent 4 }}
  mtls:
    {{- include "schema.mtls" . | nindent 4 }}
  portLevelMtls:
    type: object
    additionalProperties:
      {{- include "schema.mtls" . | nindent 6 }}
{{- end }}

{{- define "schema.AuthorizationPolicy" -}}
type: object
description: Access control on workloads.
properties:
  selector:
    {{- include "schema.securitySelector" . | nindent 4 }}
  targetRef:
    {{- include "schema.targetRef" . | nindent 4 }}
  targetRefs:
    type: array
    items:
      {{- include "schema.targetRef" . | nindent 6 }}
  action:
    type: string
    enum: [ALLOW, DENY, AUDIT, CUSTOM]
  provider:
    type: object
    properties:
      name:
        type: string
  rules:
    type: array
    items:
      type: object
      properties:
        from:
          type: array
          items:
            type: object
            properties:
              source:
                type: object
                properties:
                  {{- range list "principals" "notPrincipals" "requestPrincipals" "notRequestPrincipals" "namespaces" "notNamespaces" "serviceAccounts" "notServiceAccounts" "ipBlocks" "notIpBlocks" "remoteIpBlocks" "notRemoteIpBlocks" }}
                  {{ . }}:
                    {{- include "schema.strings" $ | nindent 20 }}
                  {{- end }}
        to:
          type: array
          items:
            type: object
            properties:
              operation:
                type: object
                properties:
                  {{- range list "hosts" "notHosts" "ports" "notPorts" "methods" "notMethods" "paths" "notPaths" }}
                  {{ . }}:
                    {{- include "schema.strings" $ | nindent 20 }}
                  {{- end }}
        when:
          type: array
          items:
            type: object
            required: [key]
            properties:
              key:
                type: string
              values:
                {{- include "schema.strings" . | nindent 16 }}
              notValues:
                {{- include "schema.strings" . | nindent 16 }}
{{- end }}

{{- define "schema.RequestAuthentication" -}}
type: object
description: The request credentials (JWTs) a workload accepts.
properties:
  selector:
    {{- include "schema.securitySelector" . | nindent 4 }}
  targetRef:
    {{- include "schema.targetRef" . | nindent 4 }}
  targetRefs:
    type: array
    items:
      {{- include "schema.targetRef" . | nindent 6 }}
  jwtRules:
    type: array
    items:
      type: object
      required: [issuer]
      properties:
        issuer:
          type: string
        audiences:
          {{- include "schema.strings" . | nindent 10 }}
        jwksUri:
          type: string
        jwks:
          type: string
        fromHeaders:
          type: array
          items:
            type: object
            required: [name]
            properties:
              name:
                type: string
              prefix:
                type: string
        fromParams:
          {{- include "schema.strings" . | nindent 10 }}
        fromCookies:
          {{- include "schema.strings" . | nindent 10 }}
        outputPayloadToHeader:
          type: string
        forwardOriginalToken:
          type: boolean
        spaceDelimitedClaims:
          {{- include "schema.strings" . | nindent 10 }}
        outputClaimToHeaders:
          type: array
          items:
            type: object
            properties:
              header:
                type: string
              claim:
                type: string
        timeout:
          {{- include "schema.duration" . | nindent 10 }}
{{- end }}

{{- define "schema.rateLimitUnit" -}}
type: string
enum: [SECOND, MINUTE, HOUR]
{{- end }}

{{- define "schema.LocalRateLimit" -}}
type: object
required: [requestsPerUnit, unit]
properties:
  workloadSelector:
    {{- include "schema.securitySelector" . | nindent 4 }}
  requestsPerUnit:
    type: integer
    minimum: 1
    maximum: 4294967295
  unit:
    {{- include "schema.rateLimitUnit" . | nindent 4 }}
  burst:
    type: integer
    minimum: 1
    maximum: 4294967295
  routes:
    type: array
    items:
      type: object
      required: [match, requestsPerUnit]
      properties:
        name:
          type: string
        match:
          type: array
          items:
            type: object
            properties:
              uri:
                {{- include "schema.stringMatch" . | nindent 16 }}
              method:
                {{- include "schema.stringMatch" . | nindent 16 }}
        requestsPerUnit:
          type: integer
          minimum: 1
          maximum: 4294967295
        unit:
          {{- include "schema.rateLimitUnit" . | nindent 10 }}
        burst:
          type: integer
          minimum: 1
          maximum: 4294967295
{{- end }}
