//! What the picker reads from a request body: the model and the prompt text, from an OpenAI chat
//! completion (`messages`) or completion (`prompt`). Anything else parses to `None` and is
//! scored without prefix affinity.

use serde_json::Value;

/// The parts of an OpenAI request that scoring uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InferenceRequest {
    pub model: Option<String>,
    /// The prompt as one text, in order: for a chat, each message's role and content.
    pub prompt: String,
}

/// Reads `body` as an OpenAI chat completion or completion request.
pub fn parse(body: &[u8]) -> Option<InferenceRequest> {
    let json: Value = serde_json::from_slice(body).ok()?;
    let model = json.get("model").and_then(Value::as_str).map(str::to_string);
    let prompt = if let Some(messages) = json.get("messages").and_then(Value::as_array) {
        chat_prompt(messages)
    } else {
        completion_prompt(json.get("prompt")?)?
    };
    Some(InferenceRequest { model, prompt })
}

fn chat_prompt(messages: &[Value]) -> String {
    let mut prompt = String::new();
    for message in messages {
        let role = message.get("role").and_then(Value::as_str).unwrap_or_default();
        prompt.push_str(role);
        prompt.push('\n');
        match message.get("content") {
            Some(Value::String(text)) => prompt.push_str(text),
            Some(Value::Array(parts)) => {
                for part in parts {
                    // Text parts, and the URL of an image so that two images differ.
                    let text = part.get("text").and_then(Value::as_str).or_else(|| {
                        part.get("image_url").and_then(|i| i.get("url")).and_then(Value::as_str)
                    });
                    prompt.push_str(text.unwrap_or_default());
                }
            }
            _ => {}
        }
        prompt.push('\n');
    }
    prompt
}

/// A completion prompt: a string, a list of strings, or token ids (one list or several).
fn completion_prompt(prompt: &Value) -> Option<String> {
    match prompt {
        Value::String(s) => Some(s.clone()),
        Value::Array(items) => {
            let mut out = String::new();
            for item in items {
                match item {
                    Value::String(s) => out.push_str(s),
                    Value::Number(n) => {
                        out.push_str(&n.to_string());
                        out.push(',');
                    }
                    Value::Array(_) => out.push_str(&completion_prompt(item)?),
                    _ => return None,
                }
            }
            Some(out)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_with_text_and_parts() {
        let body = br#"{"model":"m","messages":[
            {"role":"system","content":"be brief"},
            {"role":"user","content":[{"type":"text","text":"look: "},
                {"type":"image_url","image_url":{"url":"http://x/cat.png"}}]}]}"#;
        let r = parse(body).unwrap();
        assert_eq!(r.model.as_deref(), Some("m"));
        assert_eq!(r.prompt, "system\nbe brief\nuser\nlook: http://x/cat.png\n");
    }

    #[test]
    fn completions_in_every_prompt_shape() {
        let text = parse(br#"{"model":"m","prompt":"San Francisco is"}"#).unwrap();
        assert_eq!(text.prompt, "San Francisco is");
        let list = parse(br#"{"prompt":["a","b"]}"#).unwrap();
        assert_eq!((list.model, list.prompt.as_str()), (None, "ab"));
        let tokens = parse(br#"{"model":"m","prompt":[[1,2],[3]]}"#).unwrap();
        assert_eq!(tokens.prompt, "1,2,3,");
    }

    #[test]
    fn other_bodies_do_not_parse() {
        assert_eq!(parse(b"not json"), None);
        assert_eq!(parse(br#"{"model":"m","input":"embeddings"}"#), None);
        assert_eq!(parse(br#"{"model":"m","prompt":{"x":1}}"#), None);
        assert_eq!(parse(b""), None);
    }
}
