// The byte-level tokenizer: each UTF-8 byte is one token (vocabulary 256), the NUL byte separates documents.
using System.Text;

namespace L2L.Model.Tokenizers;

/// <summary>
/// UTF-8 bytes as tokens, the same ids as training on a raw text file. Text files never contain NUL, so id 0
/// is free to mark the end of a document and the vocabulary stays 256.
/// </summary>
public sealed class ByteTokenizer : ITextTokenizer
{
    /// <summary>The name recorded beside data and checkpoints.</summary>
    public const string TokenizerName = "bytes";

    /// <inheritdoc/>
    public string Name => TokenizerName;

    /// <inheritdoc/>
    public int VocabSize => 256;

    /// <inheritdoc/>
    public int EndOfTextId => 0;

    /// <inheritdoc/>
    public IReadOnlyList<int> Encode(string text)
    {
        var bytes = Encoding.UTF8.GetBytes(text);
        return Array.ConvertAll(bytes, b => (int)b);
    }

    /// <inheritdoc/>
    public string Decode(IEnumerable<int> ids)
    {
        var bytes = ids.Select(id => id is >= 0 and < 256
            ? (byte)id
            : throw new ArgumentOutOfRangeException(nameof(ids), id, "Byte token ids lie in 0..255.")).ToArray();
        return Encoding.UTF8.GetString(bytes);
    }

    /// <inheritdoc/>
    public int LastSafeSplit(ReadOnlySpan<char> text)
    {
        // Any cut between whole code points gives the same bytes.
        for (var p = text.Length - 1; p > 0; p--)
            if (!char.IsLowSurrogate(text[p]))
                return p;
        return 0;
    }
}
