#!/usr/bin/env python3
"""Strict fake GCP Vertex AI: Gemini generateContent / streamGenerateContent and text-embedding
predict, Anthropic rawPredict / streamRawPredict, and the service-account token endpoint
(google_token.py) in the same process, for aixds's translation tests.

    python e2e/providers/vertex.py --id vertex-a --service-account KEY.json \\
        [--token-lifetime SECONDS] [--token-secret S] [--project P] [--location L] [--record FILE]

Routes, under `/v1/projects/{project}/locations/{location}/publishers/`:
`google/models/{model}:generateContent`, `:streamGenerateContent` (`?alt=sse` for SSE, else a
streamed JSON array), `:predict` (text embeddings), and `anthropic/models/{model}:rawPredict`,
`:streamRawPredict` (Anthropic's Messages body without `model` and with `anthropic_version:
"vertex-2023-10-16"` or a dated API version; answered as a stream when it says `stream: true`). `POST /token` is the
JWT bearer grant endpoint and `GET /tokens` lists the tokens it issued (see google_token.py).

Every model request needs `Authorization: Bearer <token>` with a live token from this endpoint
(or from a google_token.py started with the same `--token-secret`), else a 401 in Google's
error shape (`{"error": {"code", "message", "status"}}`); `--project`/`--location`, when given,
must match the path (else 403 PERMISSION_DENIED / 400 INVALID_ARGUMENT). Gemini bodies are
validated against the documented schema (unknown fields anywhere, including JSON-schema keywords
outside Gemini's OpenAPI subset such as `additionalProperties` or `$schema`, roles other than
user/model, empty text, function call and response turns out of order or unmatched, ...:
400 INVALID_ARGUMENT); field names may be camelCase or snake_case, as the real API's JSON allows.

Replies say "Hello from <id>" (three stream pieces; `candidateCount` candidates), call the first
function declared (or the first `allowedFunctionNames`, none for mode NONE) with {"city":
"Paris"} until the last content carries a function response, stop for `maxOutputTokens` (counted
in pieces) and `stopSequences`, answer JSON that fits `responseSchema` when `responseMimeType`
is application/json, and count prompt tokens as words. SSE events end in CRLF CRLF, as Google's
do, and go out in pieces cut at awkward places.

Knobs in the model name: `fail-NNN` answers that status (as `--fail-status` does for every
request), `safety` / `recitation` finish with SAFETY / RECITATION and no content,
`blocked-prompt` blocks the prompt (promptFeedback, no candidates), and `cache` reports the
prompt before the last content as cachedContentTokenCount when a request with the same prefix
came before (Gemini's implicit caching).
"""

import base64
import binascii
import datetime
import json
import re
import uuid
from urllib.parse import unquote

import anthropic_messages
from fakeserver import (
    TOOL_ARGUMENTS, Invalid, PromptCache, Refused, check_bool, check_int, check_list, check_number,
    check_object, check_string, compose_reply, embedding_vector, parser, sample_for_schema, serve, words,
)
from google_token import TokenHandler, add_token_arguments, issuer_from

ANTHROPIC_VERSION = "vertex-2023-10-16"
ROUTE = re.compile(r"^/(v1|v1beta1)/projects/([^/]+)/locations/([^/]+)/publishers/(google|anthropic)/models/([^/:]+):(\w+)$")
STATUSES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
            409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 500: "INTERNAL", 501: "NOT_IMPLEMENTED",
            503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
ANTHROPIC_ERRORS = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 529: "overloaded_error"}

REQUEST = {"contents", "systemInstruction", "tools", "toolConfig", "safetySettings", "generationConfig", "labels",
           "cachedContent"}
PART = {"text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode", "codeExecutionResult",
        "thought", "thoughtSignature", "videoMetadata"}
PART_DATA = ("text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode",
             "codeExecutionResult")
SCHEMA = {"type", "format", "title", "description", "nullable", "default", "items", "minItems", "maxItems", "enum",
          "properties", "propertyOrdering", "required", "minProperties", "maxProperties", "minimum", "maximum",
          "minLength", "maxLength", "pattern", "example", "anyOf"}
SCHEMA_TYPES = {"TYPE_UNSPECIFIED", "STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL"}
GENERATION_CONFIG = {"temperature", "topP", "topK", "candidateCount", "maxOutputTokens", "stopSequences",
                     "presencePenalty", "frequencyPenalty", "responseMimeType", "responseSchema", "responseJsonSchema",
                     "seed", "responseLogprobs", "logprobs", "audioTimestamp", "thinkingConfig", "responseModalities",
                     "mediaResolution", "speechConfig", "routingConfig"}
RESPONSE_MIME_TYPES = {"text/plain", "application/json", "text/x.enum"}
FUNCTION_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_.:-]{0,63}$")
CALLING_MODES = {"MODE_UNSPECIFIED", "AUTO", "ANY", "NONE", "VALIDATED"}
HARM_CATEGORIES = {"HARM_CATEGORY_UNSPECIFIED", "HARM_CATEGORY_HATE_SPEECH", "HARM_CATEGORY_DANGEROUS_CONTENT",
                   "HARM_CATEGORY_HARASSMENT", "HARM_CATEGORY_SEXUALLY_EXPLICIT", "HARM_CATEGORY_CIVIC_INTEGRITY"}
THRESHOLDS = {"HARM_BLOCK_THRESHOLD_UNSPECIFIED", "BLOCK_LOW_AND_ABOVE", "BLOCK_MEDIUM_AND_ABOVE", "BLOCK_ONLY_HIGH",
              "BLOCK_NONE", "OFF"}
RATED_CATEGORIES = ("HARM_CATEGORY_HATE_SPEECH", "HARM_CATEGORY_DANGEROUS_CONTENT", "HARM_CATEGORY_HARASSMENT",
                    "HARM_CATEGORY_SEXUALLY_EXPLICIT")


def google_error(status, message):
    return Refused(status, {"error": {"code": status, "message": message, "status": STATUSES.get(status, "UNKNOWN")}})


def camel(key):
    head, *rest = key.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def fields(obj, where, allowed, required=()):
    """`obj`'s fields under their camelCase names (the API's JSON takes snake_case too); unknown,
    repeated or missing required fields are `Invalid`."""
    check_object(obj, where)
    out = {}
    for key, value in obj.items():
        name = camel(key)
        if name not in allowed:
            raise Invalid(f"unknown field {key!r} at {where}")
        if name in out:
            raise Invalid(f"field {name!r} given twice at {where}")
        out[name] = value
    for name in required:
        if name not in out:
            raise Invalid(f"missing required field {name!r} at {where}")
    return out


def enum_value(value, where, allowed):
    if not isinstance(value, str) or value not in allowed:
        raise Invalid(f"invalid value {value!r} at {where} (one of {', '.join(sorted(allowed))})")
    return value


def validate_generate(body):
    """Checks a generateContent body; returns it with field names in camelCase where the reply
    reads them."""
    request = fields(body, "request", REQUEST, ("contents",))
    request["contents"] = check_contents(request["contents"])
    if "systemInstruction" in request:
        request["systemInstruction"] = check_content(request["systemInstruction"], "systemInstruction", system=True)
    names = []
    if "tools" in request:
        request["tools"], names = check_tools(request["tools"])
    if "toolConfig" in request:
        request["toolConfig"] = check_tool_config(request["toolConfig"], names)
    if "generationConfig" in request:
        request["generationConfig"] = check_generation_config(request["generationConfig"])
    for i, setting in enumerate(check_list(request.get("safetySettings", []), "safetySettings")):
        setting = fields(setting, f"safetySettings[{i}]", {"category", "threshold", "method"}, ("category", "threshold"))
        enum_value(setting["category"], f"safetySettings[{i}].category", HARM_CATEGORIES)
        enum_value(setting["threshold"], f"safetySettings[{i}].threshold", THRESHOLDS)
    for key, value in check_object(request.get("labels", {}), "labels").items():
        check_string(value, f"labels.{key}")
    if "cachedContent" in request:
        check_string(request["cachedContent"], "cachedContent", non_empty=True)
    return request


def check_contents(contents):
    contents = [check_content(c, f"contents[{i}]") for i, c in enumerate(check_list(contents, "contents", min_items=1))]
    for i, content in enumerate(contents):
        calls = [p["functionCall"]["name"] for p in content["parts"] if "functionCall" in p]
        responses = [p["functionResponse"]["name"] for p in content["parts"] if "functionResponse" in p]
        previous = contents[i - 1] if i else None
        previous_calls = [p["functionCall"]["name"] for p in previous["parts"] if "functionCall" in p] if previous else []
        if calls and (previous is None or previous["role"] != "user"):
            raise Invalid(f"contents[{i}]: a function call turn must come right after a user turn or a function "
                          "response turn")
        if responses and not previous_calls:
            raise Invalid(f"contents[{i}]: a function response turn must come right after a function call turn")
        if previous_calls and len(responses) != len(previous_calls):
            raise Invalid(f"contents[{i}]: the number of function response parts ({len(responses)}) must equal the "
                          f"number of function call parts of the function call turn ({len(previous_calls)})")
        if sorted(responses) != sorted(previous_calls):
            raise Invalid(f"contents[{i}]: function responses {responses} do not answer the calls {previous_calls}")
    return contents


def check_content(content, where, system=False):
    content = fields(content, where, {"role", "parts"}, ("parts",))
    role = content.get("role")
    if not system and role not in ("user", "model"):
        raise Invalid(f"{where}.role: please use a valid role: user, model (not {role!r})")
    parts = check_list(content["parts"], f"{where}.parts", min_items=1)
    content["parts"] = [check_part(p, f"{where}.parts[{j}]", role, system) for j, p in enumerate(parts)]
    return content


def check_part(part, where, role, system):
    part = fields(part, where, PART)
    data = [name for name in PART_DATA if name in part]
    if len(data) != 1:
        raise Invalid(f"{where} must hold exactly one of {', '.join(PART_DATA)} (it holds {data or 'none'})")
    kind = data[0]
    if system and kind != "text":
        raise Invalid(f"{where}: a system instruction holds text parts only")
    if "thought" in part:
        check_bool(part["thought"], f"{where}.thought")
    if "thoughtSignature" in part:
        check_base64(part["thoughtSignature"], f"{where}.thoughtSignature")
    if kind == "text":
        if not check_string(part["text"], f"{where}.text").strip():
            raise Invalid(f"{where}: unable to submit request because it has an empty text parameter")
    elif kind == "inlineData":
        data = fields(part["inlineData"], f"{where}.inlineData", {"mimeType", "data", "displayName"}, ("mimeType", "data"))
        check_string(data["mimeType"], f"{where}.inlineData.mimeType", non_empty=True)
        check_base64(data["data"], f"{where}.inlineData.data")
        part["inlineData"] = data
    elif kind == "fileData":
        data = fields(part["fileData"], f"{where}.fileData", {"mimeType", "fileUri", "displayName"}, ("mimeType", "fileUri"))
        check_string(data["fileUri"], f"{where}.fileData.fileUri", non_empty=True)
    elif kind == "functionCall":
        if role != "model":
            raise Invalid(f"{where}: functionCall parts belong in model turns")
        call = fields(part["functionCall"], f"{where}.functionCall", {"name", "args", "id"}, ("name",))
        check_string(call["name"], f"{where}.functionCall.name", non_empty=True)
        check_object(call.get("args", {}), f"{where}.functionCall.args")
        part["functionCall"] = call
    elif kind == "functionResponse":
        if role != "user":
            raise Invalid(f"{where}: functionResponse parts belong in user turns")
        response = fields(part["functionResponse"], f"{where}.functionResponse", {"name", "response", "id", "parts"},
                          ("name", "response"))
        check_string(response["name"], f"{where}.functionResponse.name", non_empty=True)
        check_object(response["response"], f"{where}.functionResponse.response")
        part["functionResponse"] = response
    elif kind == "executableCode":
        fields(part[kind], f"{where}.{kind}", {"language", "code"}, ("language", "code"))
    else:
        fields(part[kind], f"{where}.{kind}", {"outcome", "output"}, ("outcome",))
    return part


def check_base64(value, where):
    try:
        base64.b64decode(check_string(value, where), validate=True)
    except binascii.Error:
        try:
            base64.urlsafe_b64decode(value)
        except (binascii.Error, ValueError):
            raise Invalid(f"{where} is not valid base64") from None


def check_tools(tools):
    """Checks tools; returns them normalized and the declared function names."""
    out, names = [], []
    for i, tool in enumerate(check_list(tools, "tools")):
        where = f"tools[{i}]"
        tool = fields(tool, where, {"functionDeclarations", "googleSearch", "googleSearchRetrieval", "codeExecution",
                                    "retrieval", "urlContext", "enterpriseWebSearch", "googleMaps"})
        declarations = []
        for j, declaration in enumerate(check_list(tool.get("functionDeclarations", []), f"{where}.functionDeclarations")):
            d_where = f"{where}.functionDeclarations[{j}]"
            declaration = fields(declaration, d_where, {"name", "description", "parameters", "parametersJsonSchema",
                                                        "response", "responseJsonSchema"}, ("name",))
            if not FUNCTION_NAME.match(check_string(declaration["name"], f"{d_where}.name")):
                raise Invalid(f"{d_where}.name must start with a letter or underscore and hold only letters, digits, "
                              "underscores, dots, colons and dashes (at most 64)")
            if "description" in declaration:
                check_string(declaration["description"], f"{d_where}.description")
            if "parameters" in declaration and "parametersJsonSchema" in declaration:
                raise Invalid(f"{d_where}: parameters and parametersJsonSchema are mutually exclusive")
            if "parameters" in declaration:
                declaration["parameters"] = check_schema(declaration["parameters"], f"{d_where}.parameters")
            if "parametersJsonSchema" in declaration:
                check_object(declaration["parametersJsonSchema"], f"{d_where}.parametersJsonSchema")
            if "response" in declaration:
                declaration["response"] = check_schema(declaration["response"], f"{d_where}.response")
            if declaration["name"] in names:
                raise Invalid(f"{d_where}.name: function names must be unique ({declaration['name']!r} repeats)")
            names.append(declaration["name"])
            declarations.append(declaration)
        tool["functionDeclarations"] = declarations
        out.append(tool)
    return out, names


def check_schema(schema, where):
    """Checks an OpenAPI-subset Schema (the keywords Gemini knows, no more); returns it normalized."""
    schema = fields(schema, where, SCHEMA)
    if "type" in schema:
        schema["type"] = enum_value(str(schema["type"]).upper() if isinstance(schema["type"], str) else schema["type"],
                                    f"{where}.type", SCHEMA_TYPES)
    for key in ("description", "title", "format", "pattern"):
        if key in schema:
            check_string(schema[key], f"{where}.{key}")
    if "nullable" in schema:
        check_bool(schema["nullable"], f"{where}.nullable")
    for key in ("enum", "required", "propertyOrdering"):
        for k, item in enumerate(check_list(schema.get(key, []), f"{where}.{key}")):
            check_string(item, f"{where}.{key}[{k}]")
    for key in ("minItems", "maxItems", "minProperties", "maxProperties", "minLength", "maxLength"):
        # int64 fields: the API's JSON takes them as numbers or decimal strings.
        if key in schema and not (isinstance(schema[key], str) and schema[key].isdigit()):
            check_int(schema[key], f"{where}.{key}", minimum=0)
    for key in ("minimum", "maximum"):
        if key in schema:
            check_number(schema[key], f"{where}.{key}")
    if "items" in schema:
        schema["items"] = check_schema(schema["items"], f"{where}.items")
    if "properties" in schema:
        schema["properties"] = {name: check_schema(value, f"{where}.properties[{name!r}]")
                                for name, value in check_object(schema["properties"], f"{where}.properties").items()}
    if "anyOf" in schema:
        schema["anyOf"] = [check_schema(s, f"{where}.anyOf[{k}]")
                           for k, s in enumerate(check_list(schema["anyOf"], f"{where}.anyOf", min_items=1))]
    return schema


def check_tool_config(config, names):
    config = fields(config, "toolConfig", {"functionCallingConfig", "retrievalConfig"})
    if "functionCallingConfig" in config:
        where = "toolConfig.functionCallingConfig"
        calling = fields(config["functionCallingConfig"], where, {"mode", "allowedFunctionNames"})
        mode = enum_value(calling.get("mode", "AUTO"), f"{where}.mode", CALLING_MODES)
        allowed = check_list(calling.get("allowedFunctionNames", []), f"{where}.allowedFunctionNames")
        if allowed and mode not in ("ANY", "VALIDATED"):
            raise Invalid(f"{where}.allowedFunctionNames may only be set when the mode is ANY")
        for k, name in enumerate(allowed):
            if name not in names:
                raise Invalid(f"{where}.allowedFunctionNames[{k}] {name!r} is not a declared function")
        if mode in ("ANY", "VALIDATED") and not names:
            raise Invalid(f"{where}.mode {mode} needs function declarations")
        config["functionCallingConfig"] = calling
    return config


def check_generation_config(config):
    where = "generationConfig"
    config = fields(config, where, GENERATION_CONFIG)
    limits = {"temperature": (0, 2), "topP": (0, 1), "topK": (1, None), "presencePenalty": (-2, 2),
              "frequencyPenalty": (-2, 2)}
    for key, (low, high) in limits.items():
        if key in config:
            check_number(config[key], f"{where}.{key}", low, high)
    if "candidateCount" in config:
        check_int(config["candidateCount"], f"{where}.candidateCount", 1, 8)
    if "maxOutputTokens" in config:
        check_int(config["maxOutputTokens"], f"{where}.maxOutputTokens", minimum=1)
    if "seed" in config:
        check_int(config["seed"], f"{where}.seed")
    if "logprobs" in config:
        check_int(config["logprobs"], f"{where}.logprobs", 1, 20)
    for key in ("responseLogprobs", "audioTimestamp"):
        if key in config:
            check_bool(config[key], f"{where}.{key}")
    sequences = check_list(config.get("stopSequences", []), f"{where}.stopSequences")
    if len(sequences) > 5:
        raise Invalid(f"{where}.stopSequences may hold at most 5 sequences")
    for k, sequence in enumerate(sequences):
        check_string(sequence, f"{where}.stopSequences[{k}]", non_empty=True)
    mime = config.get("responseMimeType", "text/plain")
    enum_value(mime, f"{where}.responseMimeType", RESPONSE_MIME_TYPES)
    if "responseSchema" in config and "responseJsonSchema" in config:
        raise Invalid(f"{where}: responseSchema and responseJsonSchema are mutually exclusive")
    if ("responseSchema" in config or "responseJsonSchema" in config) and mime == "text/plain":
        raise Invalid(f"{where}: a response schema needs responseMimeType application/json or text/x.enum")
    if "responseSchema" in config:
        config["responseSchema"] = check_schema(config["responseSchema"], f"{where}.responseSchema")
    if "thinkingConfig" in config:
        thinking = fields(config["thinkingConfig"], f"{where}.thinkingConfig",
                          {"thinkingBudget", "includeThoughts", "thinkingLevel"})
        if "thinkingBudget" in thinking:
            check_int(thinking["thinkingBudget"], f"{where}.thinkingConfig.thinkingBudget", minimum=-1)
    return config


def function_to_call(request):
    """The function the fake model calls, or None."""
    names = [d["name"] for t in request.get("tools", []) for d in t["functionDeclarations"]]
    calling = request.get("toolConfig", {}).get("functionCallingConfig", {})
    last = request["contents"][-1]
    if not names or calling.get("mode") == "NONE" or any("functionResponse" in p for p in last["parts"]):
        return None
    return (calling.get("allowedFunctionNames") or names)[0]


def reply_text(config, upstream_id):
    """The reply's text when the response MIME type asks for JSON or an enum; None for plain text."""
    mime = config.get("responseMimeType", "text/plain")
    schema = config.get("responseSchema", config.get("responseJsonSchema"))
    if mime == "application/json":
        return json.dumps(sample_for_schema(schema, upstream_id))
    if mime == "text/x.enum":
        return str((schema or {}).get("enum", [f"Hello from {upstream_id}"])[0])
    return None


def safety_ratings(blocked=False):
    ratings = [{"category": c, "probability": "NEGLIGIBLE", "probabilityScore": 0.05, "severity": "HARM_SEVERITY_NEGLIGIBLE",
                "severityScore": 0.04} for c in RATED_CATEGORIES]
    if blocked:
        ratings[1].update(probability="HIGH", probabilityScore=0.97, severity="HARM_SEVERITY_HIGH", severityScore=0.91,
                          blocked=True)
    return ratings


class VertexHandler(TokenHandler):
    server_version = "fake-vertex"

    def handle_post(self, path, query, raw):
        if path == "/token":
            self.token(raw)
            return
        route = ROUTE.match(unquote(path))
        if not route:
            raise google_error(404, f"no route for POST {path}")
        _, project, location, publisher, model, method = route.groups()
        token = self.headers.get("Authorization", "")
        if not token.startswith("Bearer ") or not self.server.issuer.check(token[len("Bearer "):].strip()):
            raise google_error(401, "Request had invalid authentication credentials: expected a live OAuth 2 access "
                                    "token from the service account's token endpoint.")
        if self.server.project and project != self.server.project:
            raise google_error(403, f"Permission denied on resource project {project}.")
        if self.server.location and location != self.server.location:
            raise google_error(400, f"location {location!r} does not match this endpoint's {self.server.location!r}")
        methods = {"google": ("generateContent", "streamGenerateContent", "predict"),
                   "anthropic": ("rawPredict", "streamRawPredict")}[publisher]
        if method not in methods:
            raise google_error(404, f"publishers/{publisher} models have no method {method}")
        status = self.failure(model)
        if status:
            self.fail(status, publisher)
        if publisher == "anthropic":
            self.anthropic(raw, model)
            return
        try:
            body = self.parse_json_object(raw)
            request = validate_predict(body) if method == "predict" else validate_generate(body)
        except Invalid as err:
            raise google_error(400, f"Invalid request: {err}") from None
        if method == "predict":
            self.send_json(200, predict(request))
        elif method == "generateContent":
            self.send_json(200, self.generate(request, model, stream=False)[0])
        else:
            self.stream_generate(request, model, query.get("alt") == "sse")

    def fail(self, status, publisher):
        message = f"simulated failure {status} from {self.server.upstream_id}"
        if publisher == "anthropic":
            raise Refused(status, {"type": "error", "error": {"type": ANTHROPIC_ERRORS.get(status, "api_error"),
                                                              "message": message}})
        raise google_error(status, message)

    def anthropic(self, raw, model):
        try:
            body = self.parse_json_object(raw)
            anthropic_messages.validate(body, ANTHROPIC_VERSION, extra_fields=("stream",))
        except Invalid as err:
            raise Refused(400, {"type": "error", "error": {"type": "invalid_request_error", "message": str(err)}}) from None
        if not body.get("stream"):
            self.send_json(200, anthropic_messages.message(body, model, self.server.upstream_id, self.server.cache))
            return
        writer = self.start_stream("text/event-stream", {"Cache-Control": "no-cache"})
        for name, data in anthropic_messages.stream_events(body, model, self.server.upstream_id, self.server.cache):
            writer.send(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
        self.end_stream(writer)

    def generate(self, request, model, stream):
        """The GenerateContentResponse answering `request`: one, or the chunks of its stream."""
        config = request.get("generationConfig", {})
        count = config.get("candidateCount", 1)
        answer = compose_reply(self.server.upstream_id, tool=function_to_call(request),
                               max_tokens=config.get("maxOutputTokens"), stop_sequences=config.get("stopSequences", ()),
                               text=reply_text(config, self.server.upstream_id))
        common = {"modelVersion": model, "createTime": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                  "responseId": uuid.uuid4().hex[:22]}
        usage = self.usage(request, model, answer.output_tokens * count)
        if "blocked-prompt" in model:
            return [{"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": safety_ratings(blocked=True)},
                     "usageMetadata": usage, **common}]
        finish = {"max_tokens": "MAX_TOKENS"}.get(answer.finish, "STOP")
        blocked = next((reason for knob, reason in (("safety", "SAFETY"), ("recitation", "RECITATION")) if knob in model), None)

        def candidate(index, parts, last):
            c = {"content": {"role": "model", "parts": parts}} if parts else {}
            if last:
                c.update(finishReason=blocked or finish, safetyRatings=safety_ratings(blocked == "SAFETY"))
                if not stream:
                    c["avgLogprobs"] = -0.0421
            if index:
                c["index"] = index
            return c

        if blocked:
            pieces = [[]]
        elif answer.tool:
            pieces = [[{"functionCall": {"name": answer.tool, "args": TOOL_ARGUMENTS}}]]
        elif stream:
            pieces = [[{"text": piece}] for piece in answer.pieces] or [[]]
        else:
            pieces = [[{"text": answer.text}]]
        chunks = []
        for k, parts in enumerate(pieces):
            last = k == len(pieces) - 1
            chunk = {"candidates": [candidate(i, parts, last) for i in range(count)], **common}
            if last:
                chunk["usageMetadata"] = usage
            chunks.append(chunk)
        return chunks

    def usage(self, request, model, candidate_tokens):
        texts = [p["text"] for p in request.get("systemInstruction", {}).get("parts", []) if "text" in p]
        texts += [p["text"] for c in request["contents"] for p in c["parts"] if "text" in p]
        prompt = max(1, sum(words(t) for t in texts))
        usage = {"promptTokenCount": prompt, "candidatesTokenCount": candidate_tokens,
                 "totalTokenCount": prompt + candidate_tokens, "trafficType": "ON_DEMAND",
                 "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
                 "candidatesTokensDetails": [{"modality": "TEXT", "tokenCount": candidate_tokens}]}
        if "cache" in model and len(request["contents"]) > 1:
            prefix = [request.get("systemInstruction"), request["contents"][:-1]]
            prefix_texts = [p["text"] for c in request["contents"][:-1] for p in c["parts"] if "text" in p]
            prefix_texts += [p["text"] for p in request.get("systemInstruction", {}).get("parts", []) if "text" in p]
            read, _ = self.server.cache.account(model, prefix, sum(words(t) for t in prefix_texts))
            if read:
                usage["cachedContentTokenCount"] = read
                usage["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": read}]
        return usage

    def stream_generate(self, request, model, sse):
        chunks = self.generate(request, model, stream=True)
        writer = self.start_stream("text/event-stream" if sse else "application/json")
        for k, chunk in enumerate(chunks):
            if sse:
                writer.send(f"data: {json.dumps(chunk)}\r\n\r\n".encode())
            else:
                writer.send((("[" if k == 0 else ",\r\n") + json.dumps(chunk)).encode())
        if not sse:
            writer.send(b"]")
        self.end_stream(writer)


def validate_predict(body):
    """Checks a text-embedding predict body."""
    request = fields(body, "request", {"instances", "parameters"}, ("instances",))
    for i, instance in enumerate(check_list(request["instances"], "instances", min_items=1)):
        instance = check_object(instance, f"instances[{i}]")
        for key in instance:
            if key not in ("content", "task_type", "title"):
                raise Invalid(f"unknown field {key!r} at instances[{i}]")
        check_string(instance.get("content"), f"instances[{i}].content", non_empty=True)
    parameters = fields(request.get("parameters", {}), "parameters", {"autoTruncate", "outputDimensionality"})
    if "outputDimensionality" in parameters:
        check_int(parameters["outputDimensionality"], "parameters.outputDimensionality", 1, 3072)
    request["parameters"] = parameters
    return request


def predict(request):
    dimensions = request["parameters"].get("outputDimensionality", 768)
    predictions = [{"embeddings": {"values": embedding_vector(i["content"], dimensions),
                                   "statistics": {"truncated": False, "token_count": words(i["content"])}}}
                   for i in request["instances"]]
    return {"predictions": predictions,
            "metadata": {"billableCharacterCount": sum(len(i["content"]) for i in request["instances"])}}


def main():
    p = parser(__doc__)
    add_token_arguments(p)
    p.add_argument("--project", help="the only project the paths may name")
    p.add_argument("--location", help="the only location the paths may name")
    args = p.parse_args()
    serve(VertexHandler, args, issuer=issuer_from(args), project=args.project, location=args.location,
          cache=PromptCache())


if __name__ == "__main__":
    main()
