//! The text side's tokenizer: `tokenizer.json` read by the `tokenizers` crate, with the file's
//! fixed 128-token padding replaced by batch-longest padding (fixed padding makes text encoding
//! several times slower), and truncation at the encoder's maximum length.
//!
//! Every text is passed through [`imagesearch_compliance::normalize`] before it is tokenized, so
//! the model reads exactly the text the law's lexicon judged (a zero-width space or a Cyrillic
//! lookalike cannot hide a word from the law and still reach the model).

use std::path::Path;

use tch::Tensor;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::ModelError;

/// Why a text was refused.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    #[error("text is empty")]
    Empty,
    #[error("text is empty once invisible characters are removed")]
    Invisible,
    #[error("text is {chars} characters, more than the limit of {max}")]
    TooLong { chars: usize, max: usize },
}

/// Checks a text against the product's limits (not blank, at most `max_chars` characters as
/// sent) and returns the text the model will read: [`imagesearch_compliance::normalize`]d.
pub fn validate_text(text: &str, max_chars: usize) -> Result<String, TextError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(TextError::Empty);
    }
    let chars = trimmed.chars().count();
    if chars > max_chars {
        return Err(TextError::TooLong { chars, max: max_chars });
    }
    let normalized = imagesearch_compliance::normalize(trimmed);
    if normalized.is_empty() {
        return Err(TextError::Invisible);
    }
    Ok(normalized)
}

/// Tokenizer with batch-longest padding and truncation.
pub struct TextTokenizer {
    inner: Tokenizer,
}

impl TextTokenizer {
    /// Loads `tokenizer.json`, overriding its padding and truncation.
    pub fn from_file(path: &Path, max_len: usize) -> Result<Self, ModelError> {
        let mut inner = Tokenizer::from_file(path)
            .map_err(|e| ModelError::Tokenizer(format!("{}: {e}", path.display())))?;
        let pad = inner.get_padding().cloned().unwrap_or_default();
        inner.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            pad_to_multiple_of: None,
            ..pad
        }));
        inner
            .with_truncation(Some(TruncationParams { max_length: max_len, ..Default::default() }))
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        Ok(TextTokenizer { inner })
    }

    /// How many tokens `text` takes in a batch (special tokens included, after truncation); 1
    /// when it cannot be tokenised (encoding it reports the error).
    pub fn token_count(&self, text: &str) -> usize {
        self.inner.encode(imagesearch_compliance::normalize(text), true).map_or(1, |e| e.get_ids().len().max(1))
    }

    /// Token ids and attention mask, both i64 `[B, L]` with L the longest text of the batch.
    pub fn encode_batch(&self, texts: &[&str]) -> Result<(Tensor, Tensor), ModelError> {
        let encodings = self
            .inner
            .encode_batch(texts.iter().map(|t| imagesearch_compliance::normalize(t)).collect::<Vec<_>>(), true)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        let len = encodings.iter().map(|e| e.get_ids().len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(texts.len() * len);
        let mut mask = Vec::with_capacity(texts.len() * len);
        for e in &encodings {
            ids.extend(e.get_ids().iter().map(|&x| i64::from(x)));
            mask.extend(e.get_attention_mask().iter().map(|&x| i64::from(x)));
        }
        let shape = [texts.len() as i64, len as i64];
        Ok((Tensor::from_slice(&ids).view(shape), Tensor::from_slice(&mask).view(shape)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_text() {
        assert!(matches!(validate_text("  \n", 10), Err(TextError::Empty)));
        assert!(matches!(validate_text("abcdefghijk", 10), Err(TextError::TooLong { chars: 11, max: 10 })));
        assert_eq!(validate_text("  a dog ", 10).unwrap(), "a dog");
        assert!(matches!(validate_text("\u{200b}\u{2060}\u{00ad}", 10), Err(TextError::Invisible)));
        assert_eq!(validate_text("k\u{200b}ids", 10).unwrap(), "kids");
    }
}
