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

{{/* aixds's TLS Secret: the user's, or the one the chart makes (tls-secrets.yaml). */}}
{{- define "aixds.tlsSecret" -}}
{{- .Values.tls.secretName | default (printf "%s-tls" (include "aixds.fullname" .)) }}
{{- end }}

{{/* The chart's Envoy's TLS Secret; with the user's own aixds Secret, the user names it too. */}}
{{- define "aixds.envoyTlsSecret" -}}
{{- if .Values.tls.secretName }}
{{- required "tls.secretName with envoy.enabled needs tls.envoySecretName: a Secret with ca.crt (and tls.crt, tls.key with tls.clientAuth)" .Values.tls.envoySecretName }}
{{- else }}
{{- printf "%s-envoy-tls" (include "aixds.fullname" .) }}
{{- end }}
{{- end }}

{{/* Fails the render when callers would not be authenticated and nobody said so. */}}
{{- define "aixds.checkGrpcAuth" -}}
{{- if and (not (and .Values.tls.enabled .Values.tls.clientAuth)) (not .Values.insecureGrpc) }}
{{- fail "tls.enabled and tls.clientAuth are needed so that only your Envoys can call aixds (which injects API keys); set insecureGrpc=true to accept unauthenticated callers" }}
{{- end }}
{{- end }}

{{/*
The certificates the chart makes when tls.secretName is empty, as JSON of base64 PEM: a CA, the
serving certificate of aixds (for the headless Service's name and tls.serverName) and Envoy's
client certificate, all signed by the CA. The existing Secrets' are kept across upgrades
(`lookup`); otherwise new ones are made, once per render (cached in .Values) so that every
template sees the same.
*/}}
{{- define "aixds.generatedTls" -}}
{{- if not (hasKey .Values "__aixdsGeneratedTls") }}
{{- $name := include "aixds.fullname" . }}
{{- $server := lookup "v1" "Secret" .Release.Namespace (printf "%s-tls" $name) }}
{{- $envoy := lookup "v1" "Secret" .Release.Namespace (printf "%s-envoy-tls" $name) }}
{{- $tls := dict }}
{{- if and $server $envoy }}
{{- $_ := set $tls "ca" (index $server.data "ca.crt") }}
{{- $_ := set $tls "serverCert" (index $server.data "tls.crt") }}
{{- $_ := set $tls "serverKey" (index $server.data "tls.key") }}
{{- $_ := set $tls "clientCert" (index $envoy.data "tls.crt") }}
{{- $_ := set $tls "clientKey" (index $envoy.data "tls.key") }}
{{- else }}
{{- $days := int .Values.tls.generatedValidityDays }}
{{- $ca := genCA (printf "%s-ca" $name) $days }}
{{- $host := include "aixds.grpcHost" . }}
{{- $names := compact (uniq (list $host .Values.tls.serverName)) }}
{{- $cert := genSignedCert $host nil $names $days $ca }}
{{- $client := genSignedCert "envoy" nil nil $days $ca }}
{{- $_ := set $tls "ca" ($ca.Cert | b64enc) }}
{{- $_ := set $tls "serverCert" ($cert.Cert | b64enc) }}
{{- $_ := set $tls "serverKey" ($cert.Key | b64enc) }}
{{- $_ := set $tls "clientCert" ($client.Cert | b64enc) }}
{{- $_ := set $tls "clientKey" ($client.Key | b64enc) }}
{{- end }}
{{- $_ := set .Values "__aixdsGeneratedTls" $tls }}
{{- end }}
{{- toJson (get .Values "__aixdsGeneratedTls") }}
{{- end }}

{{/* Changes when the certificates do, so that pods roll onto new ones. */}}
{{- define "aixds.tlsChecksum" -}}
{{- if .Values.tls.secretName }}
{{- printf "%s/%s" .Values.tls.secretName .Values.tls.envoySecretName | sha256sum | trunc 16 }}
{{- else }}
{{- include "aixds.generatedTls" . | sha256sum | trunc 16 }}
{{- end }}
{{- end }}
