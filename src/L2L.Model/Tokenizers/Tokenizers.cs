// Choosing a tokenizer by name, and the small file that records which tokenizer produced data or a checkpoint.
using System.Text.Json;
using System.Text.Json.Nodes;

namespace L2L.Model.Tokenizers;

/// <summary>Finds tokenizers by name and in directories (prepared data, checkpoints).</summary>
public static class TextTokenizers
{
    /// <summary>The record written beside prepared data and into checkpoints: <c>{"tokenizer": NAME, "vocab_size": V, "end_of_text_id": E}</c>.</summary>
    public const string RecordFile = "l2l_tokenizer.json";

    /// <summary>Hugging Face's single-file tokenizer.</summary>
    public const string TokenizerJsonFile = "tokenizer.json";

    /// <summary>Hugging Face's GPT-2 vocabulary file.</summary>
    public const string VocabFile = "vocab.json";

    /// <summary>Hugging Face's GPT-2 merge list.</summary>
    public const string MergesFile = "merges.txt";

    /// <summary>The names <see cref="ByName"/> accepts.</summary>
    public static IReadOnlyList<string> Names { get; } = [BpeTextTokenizer.Gpt2Name, ByteTokenizer.TokenizerName];

    /// <summary>The tokenizer called <paramref name="name"/>: <c>gpt2</c> or <c>bytes</c>.</summary>
    /// <exception cref="ArgumentException">Unknown name; the message lists the known ones.</exception>
    public static ITextTokenizer ByName(string name) => name.ToLowerInvariant() switch
    {
        BpeTextTokenizer.Gpt2Name => BpeTextTokenizer.Gpt2(),
        ByteTokenizer.TokenizerName => new ByteTokenizer(),
        _ => throw new ArgumentException($"Unknown tokenizer '{name}'; use one of: {string.Join(", ", Names)}."),
    };

    /// <summary>
    /// The tokenizer of a checkpoint (or data) directory, as Hugging Face does first: <c>tokenizer.json</c>, else
    /// <c>vocab.json</c> + <c>merges.txt</c>, else the name in <see cref="RecordFile"/>; null when there is none.
    /// </summary>
    /// <exception cref="InvalidDataException">A tokenizer file is present but unreadable.</exception>
    public static ITextTokenizer? FromDirectory(string dir)
    {
        var json = Path.Combine(dir, TokenizerJsonFile);
        if (File.Exists(json)) return BpeTextTokenizer.FromTokenizerJson(json);
        var vocab = Path.Combine(dir, VocabFile);
        var merges = Path.Combine(dir, MergesFile);
        if (File.Exists(vocab) && File.Exists(merges)) return BpeTextTokenizer.FromVocabAndMerges(vocab, merges);
        return ReadRecord(dir) is { } name ? ByName(name) : null;
    }

    /// <summary>The tokenizer name in <paramref name="dir"/>'s <see cref="RecordFile"/>, or null when the file is absent.</summary>
    /// <exception cref="InvalidDataException">The file is malformed.</exception>
    public static string? ReadRecord(string dir)
    {
        var path = Path.Combine(dir, RecordFile);
        if (!File.Exists(path)) return null;
        try
        {
            return JsonNode.Parse(File.ReadAllText(path))?["tokenizer"]?.GetValue<string>()
                ?? throw new InvalidDataException($"'{path}' has no \"tokenizer\" name.");
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or FormatException)
        {
            throw new InvalidDataException($"'{path}' is not a tokenizer record ({e.Message}); delete it or write it again with l2l prepare.");
        }
    }

    /// <summary>Writes <see cref="RecordFile"/> for <paramref name="tokenizer"/> into <paramref name="dir"/> (atomically).</summary>
    public static void WriteRecord(string dir, ITextTokenizer tokenizer)
    {
        var json = JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["tokenizer"] = tokenizer.Name,
            ["vocab_size"] = tokenizer.VocabSize,
            ["end_of_text_id"] = tokenizer.EndOfTextId,
        }, new JsonSerializerOptions { WriteIndented = true });
        AtomicFile.Write(Path.Combine(dir, RecordFile), s => s.Write(System.Text.Encoding.UTF8.GetBytes(json + "\n")));
    }

    /// <summary>Copies the tokenizer files present in <paramref name="fromDir"/> (record, tokenizer.json, vocab.json, merges.txt) into <paramref name="toDir"/>.</summary>
    public static void CopyFiles(string fromDir, string toDir)
    {
        if (Path.GetFullPath(fromDir) == Path.GetFullPath(toDir)) return;
        foreach (var name in new[] { RecordFile, TokenizerJsonFile, VocabFile, MergesFile })
        {
            var source = Path.Combine(fromDir, name);
            if (File.Exists(source))
                AtomicFile.Write(Path.Combine(toDir, name), s => { using var input = File.OpenRead(source); input.CopyTo(s); });
        }
    }
}
