{{/* The chart name, or nameOverride. */}}
{{- define "aixds.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every object name: fullnameOverride, else `<release>-<name>` (just the release
name when it already contains the chart name). 58 characters, so that suffixes such as
`-grpc` and `-envoy` stay within Kubernetes' 63.
*/}}
{{- define "aixds.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 58 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 58 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 58 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "aixds.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "aixds.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selects the aixds pods. */}}
{{- define "aixds.selectorLabels" -}}
app.kubernetes.io/name: {{ include "aixds.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: control-plane
{{- end }}

{{/* Selects the chart's Envoy pods. */}}
{{- define "aixds.envoySelectorLabels" -}}
app.kubernetes.io/name: {{ include "aixds.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: envoy
{{- end }}

{{- define "aixds.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "aixds.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "aixds.leaseName" -}}
{{- default (include "aixds.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/* The headless Service's DNS name: every ready aixds replica. */}}
{{- define "aixds.grpcHost" -}}
{{- printf "%s-grpc.%s.svc.%s" (include "aixds.fullname" .) .Release.Namespace .Values.clusterDomain }}
{{- end }}

{{/* Fails the render when TLS is on without the Secrets it needs. */}}
{{- define "aixds.tlsSecret" -}}
{{- required "tls.enabled needs tls.secretName: a Secret with tls.crt and tls.key (and ca.crt with tls.clientAuth)" .Values.tls.secretName }}
{{- end }}

{{- define "aixds.envoyTlsSecret" -}}
{{- required "tls.enabled with envoy.enabled needs tls.envoySecretName: a Secret with ca.crt (and tls.crt, tls.key with tls.clientAuth)" .Values.tls.envoySecretName }}
{{- end }}
