//! Built-in synthetic languages whose entropy rate is known exactly.
//!
//! Each language is a unifilar probabilistic automaton: in every state it emits one of a finite set
//! of strings ("words", each with an integer weight), and the next state is a function of the
//! current state and the emitted string. Within a state the strings are prefix-free, so the state
//! sequence can be read back off the text, and the entropy rate is exactly
//! `h = sum_s pi(s) H(p(. | s))` nats per word, `pi` the stationary distribution of the state chain.
//! Dividing by the stationary expected bytes per word gives nats per byte, which is the irreducible
//! loss per byte of any model of this text, whatever its tokenizer.
//!
//! Two languages are built in: `prose` (sentences over a generated lexicon with a per-document
//! topic that shifts word frequencies) and `code` (functions with nested blocks and nested calls,
//! indentation following depth). Their structure is fixed; a seed chooses the text sampled.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::error::DataError;
use crate::rng::SplitMix64;

/// A built-in synthetic language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// Prose-like: sentences, paragraphs, a topic per document (the default "general" source).
    Prose,
    /// Code-like: functions, nested blocks and calls, indentation (the default "domain" source).
    Code,
}

impl Language {
    /// Every built-in language.
    pub const ALL: [Language; 2] = [Language::Prose, Language::Code];

    /// The name used in configuration files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Language::Prose => "prose",
            Language::Code => "code",
        }
    }

    /// The language's automaton (built once per process; takes milliseconds).
    pub fn automaton(self) -> &'static Automaton {
        static PROSE: OnceLock<Automaton> = OnceLock::new();
        static CODE: OnceLock<Automaton> = OnceLock::new();
        match self {
            Language::Prose => PROSE.get_or_init(build_prose),
            Language::Code => CODE.get_or_init(build_code),
        }
    }

    /// The exact entropy rate of the language.
    pub fn entropy(self) -> EntropyRate {
        self.automaton().entropy_rate()
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Language {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self, DataError> {
        match s {
            "prose" => Ok(Language::Prose),
            "code" => Ok(Language::Code),
            other => Err(DataError::UnknownLanguage { name: other.to_string() }),
        }
    }
}

/// The exact entropy rate of an automaton's stationary text.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EntropyRate {
    /// Nats per emitted word (one automaton step).
    pub nats_per_word: f64,
    /// Expected bytes per emitted word under the stationary distribution.
    pub bytes_per_word: f64,
    /// Nats per byte: `nats_per_word / bytes_per_word`, the irreducible loss per byte.
    pub nats_per_byte: f64,
}

/// One emission of a state: its text, integer weight and the state that follows.
#[derive(Debug, Clone)]
struct Choice {
    text: Box<str>,
    weight: u64,
    next: u32,
    ends_document: bool,
}

#[derive(Debug, Clone)]
struct State {
    name: String,
    choices: Vec<Choice>,
    /// Running sums of the weights, for sampling by binary search.
    cumulative: Vec<u64>,
    total: u64,
    /// Emitted text -> choice index, for reading the state sequence back off text.
    by_text: HashMap<Box<[u8]>, u32>,
    /// The distinct text lengths of the choices, ascending.
    lengths: Vec<usize>,
}

/// A unifilar probabilistic automaton over strings with integer weights.
#[derive(Debug, Clone)]
pub struct Automaton {
    states: Vec<State>,
    start: u32,
    entropy: EntropyRate,
}

/// The integer weight of one share: shares are split among words without losing resolution.
const SHARE_UNIT: u64 = 1 << 24;

/// Builds an [`Automaton`] state by state; checks unifilarity (prefix-free emissions per state).
#[derive(Debug, Default)]
pub struct AutomatonBuilder {
    names: Vec<String>,
    index: HashMap<String, u32>,
    choices: Vec<Vec<Choice>>,
}

impl AutomatonBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// The id of the state called `name`, created on first use.
    pub fn state(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.index.get(name) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(name.to_string());
        self.index.insert(name.to_string(), id);
        self.choices.push(Vec::new());
        id
    }

    /// Adds an emission `text` from state `from` to state `next`, with a probability proportional
    /// to `share` among the state's shares.
    pub fn emit(&mut self, from: u32, text: &str, share: u64, next: u32) {
        self.push(from, text, share * SHARE_UNIT, next, false);
    }

    /// Adds an emission that ends a document (the text that follows starts a new one).
    pub fn emit_document_end(&mut self, from: u32, text: &str, share: u64, next: u32) {
        self.push(from, text, share * SHARE_UNIT, next, true);
    }

    /// Adds `prefix + word + suffix` for every weighted word; together they get `share`, split in
    /// proportion to the words' weights (rounded down to integers, at least 1).
    pub fn emit_words(
        &mut self,
        from: u32,
        words: &[(String, u64)],
        prefix: &str,
        suffix: &str,
        share: u64,
        next: u32,
    ) {
        let sum: u128 = words.iter().map(|(_, w)| *w as u128).sum();
        for (word, weight) in words {
            let w = (*weight as u128 * (share * SHARE_UNIT) as u128 / sum.max(1)).max(1) as u64;
            self.push(from, &format!("{prefix}{word}{suffix}"), w, next, false);
        }
    }

    fn push(&mut self, from: u32, text: &str, weight: u64, next: u32, ends_document: bool) {
        if weight > 0 {
            self.choices[from as usize].push(Choice { text: text.into(), weight, next, ends_document });
        }
    }

    /// Finishes the automaton starting in state `start`; errors if a state has no emission or
    /// its emissions are not prefix-free (then the text would not determine the state).
    pub fn build(self, start: u32) -> Result<Automaton, String> {
        let mut states = Vec::with_capacity(self.names.len());
        for (name, choices) in self.names.into_iter().zip(self.choices) {
            if choices.is_empty() {
                return Err(format!("state {name} has no emissions"));
            }
            let mut sorted: Vec<&str> = choices.iter().map(|c| &*c.text).collect();
            sorted.sort_unstable();
            for pair in sorted.windows(2) {
                if pair[1].starts_with(pair[0]) {
                    return Err(format!("state {name}: emission {:?} is a prefix of {:?}", pair[0], pair[1]));
                }
            }
            let mut cumulative = Vec::with_capacity(choices.len());
            let mut total = 0u64;
            for c in &choices {
                total = total.checked_add(c.weight).ok_or(format!("state {name}: weights overflow"))?;
                cumulative.push(total);
            }
            let by_text =
                choices.iter().enumerate().map(|(i, c)| (Box::<[u8]>::from(c.text.as_bytes()), i as u32)).collect();
            let mut lengths: Vec<usize> = choices.iter().map(|c| c.text.len()).collect();
            lengths.sort_unstable();
            lengths.dedup();
            states.push(State { name, choices, cumulative, total, by_text, lengths });
        }
        let entropy = entropy_rate(&states)?;
        Ok(Automaton { states, start, entropy })
    }
}

/// Power iteration on the lazy chain (P + I) / 2, which has the same stationary distribution as
/// P and is aperiodic, then the exact entropy sums.
fn entropy_rate(states: &[State]) -> Result<EntropyRate, String> {
    let n = states.len();
    let mut pi = vec![1.0 / n as f64; n];
    let mut next = vec![0.0; n];
    let mut converged = false;
    for _ in 0..200_000 {
        next.iter_mut().zip(&pi).for_each(|(x, p)| *x = 0.5 * p);
        for (s, state) in states.iter().enumerate() {
            let mass = 0.5 * pi[s] / state.total as f64;
            for c in &state.choices {
                next[c.next as usize] += mass * c.weight as f64;
            }
        }
        let sum: f64 = next.iter().sum();
        next.iter_mut().for_each(|x| *x /= sum);
        let change: f64 = next.iter().zip(&pi).map(|(a, b)| (a - b).abs()).sum();
        std::mem::swap(&mut pi, &mut next);
        if change < 1e-15 {
            converged = true;
            break;
        }
    }
    if !converged {
        return Err("stationary distribution did not converge (is the chain irreducible?)".into());
    }
    let (mut nats, mut bytes) = (0.0, 0.0);
    for (p, state) in pi.iter().zip(states) {
        let total = state.total as f64;
        for c in &state.choices {
            let q = c.weight as f64 / total;
            nats -= p * q * q.ln();
            bytes += p * q * c.text.len() as f64;
        }
    }
    Ok(EntropyRate { nats_per_word: nats, bytes_per_word: bytes, nats_per_byte: nats / bytes })
}

/// The log-loss of an automaton on a text, as read back off the text.
#[derive(Debug, Clone, Default)]
pub struct TextLoss {
    /// Per word: `-ln p(word | state)`, in text order.
    pub word_nats: Vec<f64>,
    /// Per word: its length in bytes.
    pub word_bytes: Vec<u32>,
}

impl Automaton {
    /// The exact entropy rate of the stationary text.
    pub fn entropy_rate(&self) -> EntropyRate {
        self.entropy
    }

    /// How many states the automaton has.
    pub fn state_count(&self) -> usize {
        self.states.len()
    }

    /// How many (state, emission) pairs the automaton has.
    pub fn emission_count(&self) -> usize {
        self.states.iter().map(|s| s.choices.len()).sum()
    }

    /// Samples whole documents from the start state until at least `min_bytes` are produced.
    pub fn sample_documents(&self, seed: u64, min_bytes: usize) -> Vec<String> {
        let mut rng = SplitMix64::new(seed);
        let mut state = self.start as usize;
        let mut documents = Vec::new();
        let mut current = String::new();
        let mut produced = 0usize;
        while produced < min_bytes {
            let s = &self.states[state];
            let r = rng.below(s.total);
            let i = s.cumulative.partition_point(|&c| c <= r);
            let choice = &s.choices[i];
            current.push_str(&choice.text);
            produced += choice.text.len();
            state = choice.next as usize;
            if choice.ends_document {
                documents.push(std::mem::take(&mut current));
            }
        }
        if !current.is_empty() {
            // Finish the last document so every document is whole.
            loop {
                let s = &self.states[state];
                let r = rng.below(s.total);
                let i = s.cumulative.partition_point(|&c| c <= r);
                let choice = &s.choices[i];
                current.push_str(&choice.text);
                state = choice.next as usize;
                if choice.ends_document {
                    documents.push(current);
                    break;
                }
            }
        }
        documents
    }

    /// Samples a text of about `bytes` bytes (whole words, starting at a document start).
    pub fn sample_text(&self, seed: u64, bytes: usize) -> String {
        let mut rng = SplitMix64::new(seed);
        let mut state = self.start as usize;
        let mut text = String::new();
        while text.len() < bytes {
            let s = &self.states[state];
            let r = rng.below(s.total);
            let choice = &s.choices[s.cumulative.partition_point(|&c| c <= r)];
            text.push_str(&choice.text);
            state = choice.next as usize;
        }
        text
    }

    /// Reads `text` back from the start state and scores every word with the automaton's own
    /// probabilities; errors at the first byte offset where no emission of the state matches.
    pub fn text_loss(&self, text: &str) -> Result<TextLoss, String> {
        let bytes = text.as_bytes();
        let mut state = self.start as usize;
        let mut at = 0usize;
        let mut loss = TextLoss::default();
        while at < bytes.len() {
            let s = &self.states[state];
            let found = s.lengths.iter().find_map(|&len| {
                let end = at + len;
                (end <= bytes.len()).then(|| s.by_text.get(&bytes[at..end])).flatten()
            });
            let Some(&i) = found else {
                return Err(format!(
                    "byte {at}: no emission of state {} matches {:?}",
                    s.name,
                    String::from_utf8_lossy(&bytes[at..bytes.len().min(at + 24)])
                ));
            };
            let choice = &s.choices[i as usize];
            loss.word_nats.push(-(choice.weight as f64 / s.total as f64).ln());
            loss.word_bytes.push(choice.text.len() as u32);
            at += choice.text.len();
            state = choice.next as usize;
        }
        Ok(loss)
    }
}

// ---------------------------------------------------------------------------------------------
// The lexicon and the two languages.

const ONSETS: [&str; 28] = [
    "b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z", "br", "ch", "cl", "dr",
    "gr", "pl", "sh", "st", "th", "tr",
];
const VOWELS: [&str; 8] = ["a", "e", "i", "o", "u", "ai", "ea", "ou"];
const CODAS: [&str; 10] = ["", "", "", "n", "r", "s", "t", "l", "nd", "st"];
const RESERVED: [&str; 12] = ["the", "a", "fn", "let", "if", "while", "return", "use", "and", "but", "so", "no"];

/// `count` distinct generated words of one to `max_syllables` syllables, avoiding `taken`.
fn lexicon(rng: &mut SplitMix64, count: usize, max_syllables: u64, taken: &mut HashSet<String>) -> Vec<String> {
    let mut words = Vec::with_capacity(count);
    while words.len() < count {
        let syllables = 1 + rng.below(max_syllables);
        let mut word = String::new();
        for _ in 0..syllables {
            word.push_str(ONSETS[rng.below(ONSETS.len() as u64) as usize]);
            word.push_str(VOWELS[rng.below(VOWELS.len() as u64) as usize]);
        }
        word.push_str(CODAS[rng.below(CODAS.len() as u64) as usize]);
        if !RESERVED.contains(&word.as_str()) && taken.insert(word.clone()) {
            words.push(word);
        }
    }
    words
}

/// Zipf-like integer weights for ranks 0..n: `2^20 / (rank + 2)`.
fn zipf(words: &[String]) -> Vec<(String, u64)> {
    words.iter().enumerate().map(|(r, w)| (w.clone(), (1u64 << 20) / (r as u64 + 2))).collect()
}

/// A topic's view of a word class: `k` words drawn without replacement, in a topic-specific order.
fn topic_words(rng: &mut SplitMix64, class: &[String], k: usize) -> Vec<(String, u64)> {
    let mut pool: Vec<String> = class.to_vec();
    for i in 0..k.min(pool.len()) {
        let j = i + rng.below((pool.len() - i) as u64) as usize;
        pool.swap(i, j);
    }
    pool.truncate(k);
    zipf(&pool)
}

fn fixed(words: &[&str]) -> Vec<(String, u64)> {
    zipf(&words.iter().map(|w| w.to_string()).collect::<Vec<_>>())
}

fn capitalised(words: &[(String, u64)]) -> Vec<(String, u64)> {
    words
        .iter()
        .map(|(w, p)| {
            let mut c = w.chars();
            let first = c.next().map(|f| f.to_uppercase().collect::<String>()).unwrap_or_default();
            (first + c.as_str(), *p)
        })
        .collect()
}

const PROSE_TOPICS: usize = 16;

/// The prose language: documents open with a title naming their topic; the topic selects each
/// content word class's frequent words; sentences follow a small grammar of subject, verb,
/// object and prepositional phrases, with commas, conjunctions and paragraph breaks.
fn build_prose() -> Automaton {
    let mut rng = SplitMix64::new(0x0050_524F_5345); // "PROSE"
    let mut taken = HashSet::new();
    let nouns = lexicon(&mut rng, 1200, 3, &mut taken);
    let verbs = lexicon(&mut rng, 500, 2, &mut taken);
    let adjectives = lexicon(&mut rng, 400, 3, &mut taken);
    let adverbs: Vec<String> = lexicon(&mut rng, 150, 2, &mut taken).into_iter().map(|w| w + "ly").collect();
    let titles = capitalised(&zipf(&lexicon(&mut rng, PROSE_TOPICS, 3, &mut taken)));
    let det = fixed(&["the", "a", "this", "that", "every", "some", "no", "our", "their", "each"]);
    let pron = fixed(&["they", "she", "he", "we", "it", "you", "someone"]);
    let prep = fixed(&["in", "on", "with", "from", "under", "over", "near", "after", "before", "about", "through"]);
    let conj = fixed(&["and", "but", "while", "because", "so", "although"]);

    let mut b = AutomatonBuilder::new();
    let doc_start = b.state("doc_start");
    for (t, (title, _)) in titles.iter().enumerate() {
        // The first paragraph cannot end the document at once: a title is followed by a sentence.
        let first = b.state(&format!("sentence_start/{t}"));
        b.emit(doc_start, &format!("{title}\n"), 1, first);
    }
    for t in 0..PROSE_TOPICS {
        let noun = topic_words(&mut rng, &nouns, 96);
        let verb = topic_words(&mut rng, &verbs, 64);
        let adj = topic_words(&mut rng, &adjectives, 48);
        let adv = topic_words(&mut rng, &adverbs, 24);
        let s = |b: &mut AutomatonBuilder, name: &str| b.state(&format!("{name}/{t}"));
        let para = s(&mut b, "para_start");
        let sent = s(&mut b, "sentence_start");
        let clause = s(&mut b, "clause_start");
        let subj_det = s(&mut b, "subject_det");
        let subj_adj = s(&mut b, "subject_adj");
        let verb_st = s(&mut b, "verb");
        let after_verb = s(&mut b, "after_verb");
        let obj_det = s(&mut b, "object_det");
        let obj_adj = s(&mut b, "object_adj");
        let pp_det = s(&mut b, "pp_det");
        let pp_adj = s(&mut b, "pp_adj");
        let after_np = s(&mut b, "after_np");
        let comma = s(&mut b, "comma");

        // Sentence openings: capitalised at sentence and paragraph starts, lower case after a conjunction.
        for (state, cap) in [(para, true), (sent, true), (clause, false)] {
            let (d, p) = if cap { (capitalised(&det), capitalised(&pron)) } else { (det.clone(), pron.clone()) };
            b.emit_words(state, &d, "", " ", 3, subj_det);
            b.emit_words(state, &p, "", " ", 2, verb_st);
        }
        b.emit_document_end(para, "\n", 1, doc_start);
        b.emit_words(subj_det, &adj, "", " ", 1, subj_adj);
        b.emit_words(subj_det, &noun, "", " ", 3, verb_st);
        b.emit_words(subj_adj, &noun, "", " ", 1, verb_st);
        b.emit_words(verb_st, &verb, "", " ", 1, after_verb);
        b.emit_words(after_verb, &det, "", " ", 3, obj_det);
        b.emit_words(after_verb, &prep, "", " ", 1, pp_det);
        b.emit_words(after_verb, &adv, "", ". ", 1, sent);
        b.emit_words(obj_det, &adj, "", " ", 1, obj_adj);
        b.emit_words(pp_det, &det, "", " ", 1, pp_adj);
        // A noun phrase's head ends the phrase, the clause, the sentence or the paragraph.
        for from in [obj_det, obj_adj, pp_adj] {
            let scale = if from == obj_det { 2 } else { 1 };
            b.emit_words(from, &noun, "", " ", 2 * scale, after_np);
            b.emit_words(from, &noun, "", ". ", 4 * scale, sent);
            b.emit_words(from, &noun, "", ".\n", scale, para);
            b.emit_words(from, &noun, "", ", ", scale, comma);
        }
        b.emit_words(pp_adj, &adj, "", " ", 1, obj_adj);
        b.emit_words(after_np, &prep, "", " ", 3, pp_det);
        b.emit_words(after_np, &adv, "", ". ", 1, sent);
        b.emit_words(after_np, &adv, "", ".\n", 1, para);
        b.emit_words(comma, &conj, "", " ", 1, clause);
    }
    b.build(doc_start).expect("the prose automaton is well formed")
}

const CODE_TOPICS: usize = 8;
const CODE_MAX_DEPTH: usize = 3;
const CODE_MAX_PARENS: usize = 2;

/// The code language: a module per document (`use <module>;`), functions with up to three
/// arguments, statements (`let`, `if`, `while`, `return`, calls) in blocks nested to depth 3 with
/// indentation, and expressions with calls nested two deep. The module selects the identifiers.
fn build_code() -> Automaton {
    let mut rng = SplitMix64::new(0x434F_4445); // "CODE"
    let mut taken = HashSet::new();
    let parts = lexicon(&mut rng, 400, 2, &mut taken);
    let mut names = Vec::new();
    let mut seen = HashSet::new();
    while names.len() < 600 {
        let a = &parts[rng.below(parts.len() as u64) as usize];
        let name = if rng.below(2) == 0 {
            a.clone()
        } else {
            format!("{a}_{}", parts[rng.below(parts.len() as u64) as usize])
        };
        if seen.insert(name.clone()) {
            names.push(name);
        }
    }
    let (functions, variables) = names.split_at(250);
    let modules = lexicon(&mut rng, CODE_TOPICS, 2, &mut taken);
    let numbers = fixed(&["0", "1", "2", "10", "3", "8", "16", "100", "42", "255"]);
    let indent = |d: usize| "    ".repeat(d);

    let mut b = AutomatonBuilder::new();
    let doc_start = b.state("doc_start");
    for (t, module) in modules.iter().enumerate() {
        let fn_name = b.state(&format!("fn_name/{t}"));
        b.emit(doc_start, &format!("use {module};\n\nfn "), 1, fn_name);
    }
    for t in 0..CODE_TOPICS {
        let func = topic_words(&mut rng, functions, 40);
        let var = topic_words(&mut rng, variables, 48);
        let s = |b: &mut AutomatonBuilder, name: String| b.state(&format!("{name}/{t}"));
        let top = s(&mut b, "top".into());
        let fn_name = s(&mut b, "fn_name".into());
        let args: Vec<u32> = (0..3).map(|i| s(&mut b, format!("args{i}"))).collect();
        // line[0] is the module's top level; line[d] a statement start at block depth d.
        let mut line = vec![top];
        line.extend((1..=CODE_MAX_DEPTH).map(|d| s(&mut b, format!("line{d}"))));

        b.emit(top, "fn ", 4, fn_name);
        b.emit_document_end(top, "\n", 1, doc_start);
        b.emit_words(fn_name, &func, "", "(", 1, args[0]);
        b.emit(args[0], ") {\n", 1, line[1]);
        b.emit_words(args[0], &var, "", ", ", 2, args[1]);
        b.emit_words(args[0], &var, "", ") {\n", 2, line[1]);
        b.emit_words(args[1], &var, "", ", ", 1, args[2]);
        b.emit_words(args[1], &var, "", ") {\n", 2, line[1]);
        b.emit_words(args[2], &var, "", ") {\n", 1, line[1]);
        for d in 1..=CODE_MAX_DEPTH {
            let ind = indent(d);
            let let_st = s(&mut b, format!("let{d}"));
            let expr = s(&mut b, format!("expr{d}"));
            // Inside p open parentheses (p = 1..=CODE_MAX_PARENS): arg[p - 1]; after closing one
            // and leaving p open: after[p].
            let arg: Vec<u32> = (1..=CODE_MAX_PARENS).map(|p| s(&mut b, format!("arg{d}.{p}"))).collect();
            let after: Vec<u32> = (0..=CODE_MAX_PARENS).map(|p| s(&mut b, format!("after{d}.{p}"))).collect();

            // Statements; closing the block returns to the enclosing depth.
            b.emit(line[d], &format!("{ind}let "), 6, let_st);
            b.emit(line[d], &format!("{ind}return "), 2, expr);
            b.emit_words(line[d], &func, &ind, "(", 3, arg[0]);
            if d < CODE_MAX_DEPTH {
                let cond = s(&mut b, format!("cond{d}"));
                let rhs = s(&mut b, format!("rhs{d}"));
                b.emit(line[d], &format!("{ind}if "), 2, cond);
                b.emit(line[d], &format!("{ind}while "), 1, cond);
                b.emit_words(cond, &var, "", " < ", 2, rhs);
                b.emit_words(cond, &var, "", " == ", 1, rhs);
                b.emit_words(cond, &var, "", " != ", 1, rhs);
                b.emit_words(rhs, &var, "", " {\n", 2, line[d + 1]);
                b.emit_words(rhs, &numbers, "", " {\n", 1, line[d + 1]);
            }
            if d == 1 {
                b.emit(line[d], "}\n\n", 2, top);
            } else {
                b.emit(line[d], &format!("{}}}\n", indent(d - 1)), 4, line[d - 1]);
            }
            b.emit_words(let_st, &var, "", " = ", 1, expr);
            b.emit_words(expr, &var, "", ";\n", 4, line[d]);
            b.emit_words(expr, &numbers, "", ";\n", 2, line[d]);
            b.emit_words(expr, &var, "", " + ", 1, expr);
            b.emit_words(expr, &var, "", " * ", 1, expr);
            b.emit_words(expr, &func, "", "(", 2, arg[0]);
            for p in 1..=CODE_MAX_PARENS {
                let inside = arg[p - 1];
                b.emit_words(inside, &var, "", ", ", 2, inside);
                b.emit_words(inside, &var, "", ")", 3, after[p - 1]);
                b.emit_words(inside, &numbers, "", ")", 1, after[p - 1]);
                if p < CODE_MAX_PARENS {
                    b.emit_words(inside, &func, "", "(", 1, arg[p]);
                }
                b.emit(after[p], ", ", 1, inside);
                b.emit(after[p], ")", 2, after[p - 1]);
            }
            b.emit(after[0], ";\n", 3, line[d]);
            b.emit(after[0], " + ", 1, expr);
        }
    }
    b.build(doc_start).expect("the code automaton is well formed")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Mean and batch-means standard error of `values` (consecutive batches absorb the Markov
    /// chain's correlation).
    fn mean_and_error(values: &[f64], weights: &[f64]) -> (f64, f64) {
        let batches = 100;
        let size = values.len() / batches;
        let ratios: Vec<f64> = (0..batches)
            .map(|b| {
                let r = b * size..(b + 1) * size;
                values[r.clone()].iter().sum::<f64>() / weights[r].iter().sum::<f64>()
            })
            .collect();
        let n = batches * size;
        let overall = values[..n].iter().sum::<f64>() / weights[..n].iter().sum::<f64>();
        let var = ratios.iter().map(|r| (r - overall).powi(2)).sum::<f64>() / (batches - 1) as f64;
        (overall, (var / batches as f64).sqrt())
    }

    #[test]
    fn entropy_of_a_two_state_automaton_matches_the_closed_form() {
        let mut b = AutomatonBuilder::new();
        let a = b.state("a");
        let s = b.state("b");
        b.emit(a, "x ", 1, a);
        b.emit(a, "y ", 3, s);
        b.emit(s, "z\n", 1, a);
        let rate = b.build(a).unwrap().entropy_rate();
        // pi = (4/7, 3/7); H(a) = -(1/4 ln 1/4 + 3/4 ln 3/4); H(b) = 0; every word is 2 bytes.
        let h_a = -(0.25f64 * 0.25f64.ln() + 0.75 * 0.75f64.ln());
        let expected = 4.0 / 7.0 * h_a;
        assert!((rate.nats_per_word - expected).abs() < 1e-12, "{rate:?} vs {expected}");
        assert!((rate.bytes_per_word - 2.0).abs() < 1e-12);
        assert!((rate.nats_per_byte - expected / 2.0).abs() < 1e-12);
    }

    #[test]
    fn emissions_that_are_prefixes_are_rejected() {
        let mut b = AutomatonBuilder::new();
        let a = b.state("a");
        b.emit(a, "ab", 1, a);
        b.emit(a, "abc", 1, a);
        let err = b.build(a).unwrap_err();
        assert!(err.contains("prefix"), "{err}");
        let mut b = AutomatonBuilder::new();
        let a = b.state("a");
        let _dead = b.state("dead");
        b.emit(a, "x", 1, a);
        assert!(b.build(a).unwrap_err().contains("no emissions"));
    }

    /// The exact entropy must equal the generating model's own loss on its sampled text, per
    /// word and per byte, to within four standard errors.
    #[test]
    fn exact_entropy_matches_the_models_loss_on_sampled_text() {
        for language in Language::ALL {
            let automaton = language.automaton();
            let rate = automaton.entropy_rate();
            let text = automaton.sample_text(12345, 3_000_000);
            let loss = automaton.text_loss(&text).expect("sampled text parses");
            let ones = vec![1.0; loss.word_nats.len()];
            let bytes: Vec<f64> = loss.word_bytes.iter().map(|&b| b as f64).collect();
            let (per_word, se_word) = mean_and_error(&loss.word_nats, &ones);
            let (per_byte, se_byte) = mean_and_error(&loss.word_nats, &bytes);
            // The test is only meaningful if sampling error is small against the value.
            eprintln!("{language}: sampled {per_word:.5} +- {se_word:.5} nats/word, {per_byte:.5} +- {se_byte:.5} nats/byte; exact {rate:?}");
            assert!(se_word < 0.01 * rate.nats_per_word && se_byte < 0.01 * rate.nats_per_byte);
            assert!(
                (per_word - rate.nats_per_word).abs() < 4.0 * se_word,
                "{language}: sampled {per_word:.5} +- {se_word:.5} nats/word, exact {:.5}",
                rate.nats_per_word
            );
            assert!(
                (per_byte - rate.nats_per_byte).abs() < 4.0 * se_byte,
                "{language}: sampled {per_byte:.5} +- {se_byte:.5} nats/byte, exact {:.5}",
                rate.nats_per_byte
            );
        }
    }

    #[test]
    fn documents_are_whole_and_continue_the_same_stream() {
        for language in Language::ALL {
            let automaton = language.automaton();
            let docs = automaton.sample_documents(3, 50_000);
            let joined: String = docs.concat();
            assert!(joined.len() >= 50_000);
            assert_eq!(joined, automaton.sample_text(3, joined.len()), "{language}");
            for doc in &docs {
                // Each document parses on its own from the start state.
                automaton.text_loss(doc).unwrap();
            }
            assert_ne!(docs, automaton.sample_documents(4, 50_000));
            assert_eq!(docs, automaton.sample_documents(3, 50_000));
        }
    }

    /// Pins the generated text, so that a change to the generator (which would silently change
    /// every cached corpus and result) is a deliberate one.
    #[test]
    fn generated_text_is_pinned() {
        let prose = Language::Prose.automaton().sample_text(0, 20_000);
        let code = Language::Code.automaton().sample_text(0, 20_000);
        let h = |s: &str| crate::rng::hash_bytes(0, s.as_bytes());
        assert_eq!((h(&prose), h(&code)), (PROSE_PIN, CODE_PIN), "update the pins only on purpose");
    }
    const PROSE_PIN: u64 = 10513044727390922706;
    const CODE_PIN: u64 = 2824423710319877704;

    #[test]
    fn language_names_parse() {
        assert_eq!("prose".parse::<Language>().unwrap(), Language::Prose);
        assert_eq!("code".parse::<Language>().unwrap(), Language::Code);
        let err = "poetry".parse::<Language>().unwrap_err().to_string();
        assert!(err.contains("poetry") && err.contains("prose, code"), "{err}");
    }
}
