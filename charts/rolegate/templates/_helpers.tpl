{{- define "rolegate.fullname" -}}
{{- printf "%s" .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}

{{- define "rolegate.labels" -}}
app.kubernetes.io/name: rolegate
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "rolegate.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{- define "rolegate.publicURL" -}}
{{- required "publicURL is required: the URL rolegate server is reached at" .Values.publicURL -}}
{{- end -}}

{{- /* The URI the webhook injects: the agent's address and port. */ -}}
{{- define "rolegate.credentialsURI" -}}
{{- $host := .Values.agent.address -}}
{{- if contains ":" $host }}{{ $host = printf "[%s]" (trimAll "[]" $host) }}{{ end -}}
http://{{ $host }}{{ if ne (int .Values.agent.port) 80 }}:{{ .Values.agent.port }}{{ end }}/v1/credentials
{{- end -}}

{{- define "rolegate.podEnv" -}}
- name: POD_NAME
  valueFrom: {fieldRef: {fieldPath: metadata.name}}
- name: POD_NAMESPACE
  valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
- name: AWS_REGION
  value: {{ .Values.aws.region | quote }}
{{- with .Values.aws.endpointURL }}
- name: AWS_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- include "rolegate.logEnv" . }}
{{- end -}}

{{- define "rolegate.logEnv" }}
- name: ROLEGATE_LOG
  value: {{ .Values.logLevel | quote }}
{{- if eq .Values.logFormat "json" }}
- name: ROLEGATE_LOG_FORMAT
  value: json
{{- end }}
{{- end -}}

{{- /* Every container but the agent's: non-root, nothing writable, no capability. */ -}}
{{- define "rolegate.securityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
capabilities: {drop: [ALL]}
seccompProfile: {type: RuntimeDefault}
{{- end -}}

{{- define "rolegate.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
seccompProfile: {type: RuntimeDefault}
{{- end -}}

{{- /* Scheduling and pod settings shared by every workload; . is (dict "root" $ "v" <component values> "component" <name>). */ -}}
{{- define "rolegate.podScheduling" -}}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .v.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .v.nodeSelector }}
nodeSelector: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .v.affinity }}
affinity: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .v.tolerations }}
tolerations: {{- toYaml . | nindent 2 }}
{{- end }}
{{- if or .v.defaultTopologySpread .v.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- if .v.defaultTopologySpread }}
  {{- range list "topology.kubernetes.io/zone" "kubernetes.io/hostname" }}
  - maxSkew: 1
    topologyKey: {{ . }}
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels: {app.kubernetes.io/instance: {{ $.root.Release.Name }}, app.kubernetes.io/component: {{ $.component }}}
  {{- end }}
  {{- end }}
  {{- with .v.topologySpreadConstraints }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}
{{- end -}}

{{- define "rolegate.podAnnotations" -}}
{{- with .podAnnotations }}
annotations: {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- /* A PodDisruptionBudget for a Deployment with more than one replica. */ -}}
{{- define "rolegate.pdb" -}}
{{- if and .v.podDisruptionBudget (gt (int .v.replicas) 1) }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "rolegate.fullname" .root }}-{{ .component }}
  namespace: {{ .root.Release.Namespace }}
  labels: {{- include "rolegate.labels" .root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
spec:
  maxUnavailable: 1
  selector:
    matchLabels: {app.kubernetes.io/instance: {{ .root.Release.Name }}, app.kubernetes.io/component: {{ .component }}}
{{- end }}
{{- end -}}
