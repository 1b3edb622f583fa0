// Tokenizers: round trips, GPT-2's published ids, Hugging Face files, and the streaming split rule.
using System.Text;
using System.Text.Json;
using L2L.Model.Tokenizers;
using Xunit;

namespace L2L.Model.Tests;

public sealed class TokenizerTests
{
    internal const string Mixed = "Héllo,  wörld!\tTabs\t\tand   runs of spaces   \n\n\nNew paragraph 🙂👍🏽 emoji, 世界 and — ‘quotes’ it's 12345 x\r\n end   ";

    public static TheoryData<string> Names => new("gpt2", "bytes");

    [Theory]
    [MemberData(nameof(Names))]
    public void DecodeOfEncodeIsTheText(string name)
    {
        var tok = TextTokenizers.ByName(name);
        var ids = tok.Encode(Mixed);
        Assert.All(ids, id => Assert.InRange(id, 0, tok.VocabSize - 1));
        Assert.Equal(Mixed, tok.Decode(ids));
    }

    [Theory]
    [InlineData("Hello world", new[] { 15496, 995 })]
    [InlineData("Hello, world!", new[] { 15496, 11, 995, 0 })]
    [InlineData(" the", new[] { 262 })]
    [InlineData("\n", new[] { 198 })]
    [InlineData("a\n\nb", new[] { 64, 198, 198, 65 })]
    [InlineData("<|endoftext|>", new[] { 50256 })]
    public void Gpt2IdsArePublishedOnes(string text, int[] expected)
    {
        var tok = BpeTextTokenizer.Gpt2();
        Assert.Equal(50257, tok.VocabSize);
        Assert.Equal(50256, tok.EndOfTextId);
        Assert.Equal(expected, tok.Encode(text));
    }

    [Fact]
    public void BytesAreUtf8WithNulBetweenDocuments()
    {
        var tok = new ByteTokenizer();
        Assert.Equal([0x68, 0xC3, 0xA9], tok.Encode("hé"));
        Assert.Equal(0, tok.EndOfTextId);
        Assert.Equal(256, tok.VocabSize);
    }

    [Theory]
    [MemberData(nameof(Names))]
    public void SplittingAtTheSafePointGivesTheWholeTextsIds(string name)
    {
        var tok = TextTokenizers.ByName(name);
        var whole = tok.Encode(Mixed);
        for (var end = 2; end <= Mixed.Length; end++)
        {
            var cut = tok.LastSafeSplit(Mixed.AsSpan(0, end));
            if (cut == 0) continue;
            Assert.InRange(cut, 1, end - 1);
            Assert.False(char.IsLowSurrogate(Mixed[cut]));
            var pieces = tok.Encode(Mixed[..cut]).Concat(tok.Encode(Mixed[cut..])).ToArray();
            Assert.Equal(whole, pieces);
        }
    }

    [Fact]
    public void Gpt2NeverSplitsAWhitespaceRun()
    {
        var tok = BpeTextTokenizer.Gpt2();
        const string text = "one\n\n\ntwo  \n\n  three";
        for (var end = 1; end <= text.Length; end++)
        {
            var cut = tok.LastSafeSplit(text.AsSpan(0, end));
            if (cut > 0) Assert.False(char.IsWhiteSpace(text[cut - 1]), $"cut at {cut} inside a whitespace run");
        }
        Assert.Equal(0, tok.LastSafeSplit("nospaceatall"));
    }

    // A byte-level vocabulary: the 256 byte symbols plus a few merges, so every id can be checked by hand.
    private static (Dictionary<string, int> Vocab, string[] Merges) TinyVocab()
    {
        var symbols = new List<char>();
        var mapped = new HashSet<int>();
        for (var b = 33; b <= 126; b++) mapped.Add(b);
        for (var b = 161; b <= 172; b++) mapped.Add(b);
        for (var b = 174; b <= 255; b++) mapped.Add(b);
        var extra = 0;
        var symbolOf = new char[256];
        for (var b = 0; b < 256; b++) symbolOf[b] = mapped.Contains(b) ? (char)b : (char)(256 + extra++);
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        for (var b = 0; b < 256; b++) vocab[symbolOf[b].ToString()] = b;
        string[] merges = ["h e", "l l", "he ll", "hell o", "\u0120 w"];
        foreach (var m in merges) vocab[m.Replace(" ", "")] = vocab.Count;
        vocab[BpeTextTokenizer.EndOfText] = vocab.Count;
        return (vocab, merges);
    }

    private static void CheckTiny(ITextTokenizer tok)
    {
        // "hello" merges fully (id 259); " w" is 260; "o", "r", "l", "d" stay bytes.
        Assert.Equal([259, 260, 'o', 'r', 'l', 'd'], tok.Encode("hello world"));
        Assert.Equal("hello world", tok.Decode(tok.Encode("hello world")));
        Assert.Equal(261, tok.EndOfTextId);
        Assert.Equal(262, tok.VocabSize);
    }

    [Fact]
    public void VocabAndMergesInACheckpointAreHonoured()
    {
        using var dir = new TempDirectory();
        var (vocab, merges) = TinyVocab();
        File.WriteAllText(dir.File("vocab.json"), JsonSerializer.Serialize(vocab));
        File.WriteAllText(dir.File("merges.txt"), "#version: 0.2\n" + string.Join("\n", merges) + "\n");
        var tok = TextTokenizers.FromDirectory(dir.Path);
        Assert.NotNull(tok);
        Assert.Equal("hf", tok.Name);
        CheckTiny(tok);
    }

    [Fact]
    public void TokenizerJsonInACheckpointIsHonouredAndWinsOverTheRecord()
    {
        using var dir = new TempDirectory();
        var (vocab, merges) = TinyVocab();
        var json = new Dictionary<string, object>
        {
            ["model"] = new Dictionary<string, object> { ["type"] = "BPE", ["vocab"] = vocab, ["merges"] = merges.Select(m => m.Split(' ')).ToArray() },
        };
        File.WriteAllText(dir.File("tokenizer.json"), JsonSerializer.Serialize(json));
        TextTokenizers.WriteRecord(dir.Path, new ByteTokenizer());
        CheckTiny(TextTokenizers.FromDirectory(dir.Path)!);
    }

    [Fact]
    public void TheRecordNamesTheTokenizer()
    {
        using var dir = new TempDirectory();
        Assert.Null(TextTokenizers.FromDirectory(dir.Path));
        TextTokenizers.WriteRecord(dir.Path, BpeTextTokenizer.Gpt2());
        Assert.Equal("gpt2", TextTokenizers.FromDirectory(dir.Path)!.Name);
        File.WriteAllText(dir.File(TextTokenizers.RecordFile), "{oops");
        var e = Assert.Throws<InvalidDataException>(() => TextTokenizers.FromDirectory(dir.Path));
        Assert.Contains(TextTokenizers.RecordFile, e.Message);
        Assert.Throws<ArgumentException>(() => TextTokenizers.ByName("sentencepiece"));
    }
}
