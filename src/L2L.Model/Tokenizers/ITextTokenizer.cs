// The tokenizer abstraction shared by data preparation and generation: text to ids and back.
namespace L2L.Model.Tokenizers;

/// <summary>Turns text into token ids and back. Implementations are immutable and safe to share between threads.</summary>
public interface ITextTokenizer
{
    /// <summary>The name recorded beside data and checkpoints: <c>gpt2</c>, <c>bytes</c>, or <c>hf</c> for a checkpoint's own files.</summary>
    string Name { get; }

    /// <summary>Every id the tokenizer produces is below this.</summary>
    int VocabSize { get; }

    /// <summary>The id written between documents (GPT-2's <c>&lt;|endoftext|&gt;</c>; 0 for bytes).</summary>
    int EndOfTextId { get; }

    /// <summary>The ids of <paramref name="text"/>.</summary>
    IReadOnlyList<int> Encode(string text);

    /// <summary>The text of <paramref name="ids"/> (invalid UTF-8 byte sequences become U+FFFD).</summary>
    string Decode(IEnumerable<int> ids);

    /// <summary>
    /// The largest position <c>p</c> in <c>1 .. text.Length - 1</c> (0 when there is none) at which the tokenizer's own
    /// pre-tokenization always splits, whatever text follows: <c>Encode(text[..p]) + Encode(rest)</c> equals
    /// <c>Encode(text[..p] + rest)</c> for every continuation <c>rest</c>. Streaming preparation cuts only there.
    /// </summary>
    int LastSafeSplit(ReadOnlySpan<char> text);
}
