// l2l prepare's engine: split sizes, separators, bad inputs leaving nothing behind, and streaming with exact ids.
using System.Text;
using L2L.Model.Data;
using L2L.Model.Tokenizers;
using Xunit;

namespace L2L.Model.Tests;

public sealed class TextPreparationTests
{
    private static int[] ReadAll(string path, int vocab)
    {
        var source = TokenData.Open(path, vocab);
        try
        {
            var ids = new int[source.Length];
            source.Read(0, ids);
            return ids;
        }
        finally
        {
            (source as IDisposable)?.Dispose();
        }
    }

    // Paragraphs of varied words, blank lines, whitespace runs, tabs and non-ASCII text.
    internal static string Document(int seed, int chars)
    {
        var random = new Random(seed);
        string[] words = ["the", "licence", "Free", "software", "é", "naïve", "世界", "🙂", "it's", "you'll", "42", "3.14", "(c)", "--", "GNU"];
        string[] gaps = [" ", " ", " ", "  ", "\n", "\n\n", "\n\n\n", "\t", " \n\n ", ",  ", ". "];
        var text = new StringBuilder();
        while (text.Length < chars)
            text.Append(words[random.Next(words.Length)]).Append(gaps[random.Next(gaps.Length)]);
        return text.ToString();
    }

    [Theory]
    [InlineData("bytes")]
    [InlineData("gpt2")]
    public void SplitSizesAndSeparators(string name)
    {
        using var dir = new TempDirectory();
        var tok = TextTokenizers.ByName(name);
        string[] docs = [Document(1, 3000), Document(2, 500), "short\n\n"];
        var inputs = docs.Select((d, i) => { var p = dir.File($"doc{i}.txt"); File.WriteAllText(p, d); return p; }).ToArray();

        var result = TextPreparation.Prepare(inputs, tok, dir.File("out"), valFraction: 0.1);

        var expected = new List<int>();
        for (var i = 0; i < docs.Length; i++)
        {
            if (i > 0) expected.Add(tok.EndOfTextId);
            expected.AddRange(tok.Encode(docs[i]));
            Assert.Equal(tok.Encode(docs[i]).Count, result.DocumentTokens[i]);
        }
        var total = expected.Count;
        Assert.Equal((long)Math.Ceiling(total * 0.1), result.ValTokens);
        Assert.Equal(total - result.ValTokens, result.TrainTokens);
        var train = ReadAll(result.TrainPath, tok.VocabSize);
        var val = ReadAll(result.ValPath!, tok.VocabSize);
        Assert.Equal(result.TrainTokens, train.Length);
        Assert.Equal(expected, train.Concat(val));
        Assert.Equal(docs.Length - 1, expected.Count(id => id == tok.EndOfTextId));
        Assert.Equal(name, TextTokenizers.ReadRecord(dir.File("out")));
        Assert.DoesNotContain(Directory.GetFiles(dir.File("out")), f => f.EndsWith(".tmp", StringComparison.Ordinal));
    }

    [Fact]
    public void ZeroValidationFractionWritesOnlyTrain()
    {
        using var dir = new TempDirectory();
        File.WriteAllText(dir.File("a.txt"), "some text here");
        var result = TextPreparation.Prepare([dir.File("a.txt")], new ByteTokenizer(), dir.Path, valFraction: 0);
        Assert.Null(result.ValPath);
        Assert.Equal(14, result.TrainTokens);
        Assert.False(File.Exists(dir.File("val.bin")));
    }

    public static TheoryData<string, byte[]?, string> BadInputs => new()
    {
        { "empty", [], "is empty" },
        { "binary", [0x7F, 0x45, 0x4C, 0x46, 0x02, 0x01, 0x00, 0x00, 0x41], "NUL" },
        { "latin1", Encoding.Latin1.GetBytes("caf\u00e9 cr\u00e8me"), "not UTF-8 text" },
        { "missing", null, "not found" },
    };

    [Theory]
    [MemberData(nameof(BadInputs))]
    public void BadInputIsAClearErrorAndLeavesNothingBehind(string kind, byte[]? content, string message)
    {
        using var dir = new TempDirectory();
        var good = dir.File("good.txt");
        File.WriteAllText(good, Document(3, 200_000));
        var bad = dir.File($"{kind}.txt");
        if (content is not null)
            File.WriteAllBytes(bad, kind == "latin1" ? [.. Encoding.UTF8.GetBytes(Document(4, 150_000)), .. content] : content);

        var fresh = dir.File("fresh");
        var e = Assert.ThrowsAny<SystemException>(() => TextPreparation.Prepare([good, bad], BpeTextTokenizer.Gpt2(), fresh, blockChars: 4096));
        Assert.Contains(message, e.Message);
        Assert.Contains(bad, e.Message);
        Assert.False(Directory.Exists(fresh), "a directory made for the output is removed again");

        // An earlier preparation in the same directory survives untouched.
        var existing = dir.File("existing");
        TextPreparation.Prepare([good], new ByteTokenizer(), existing);
        var before = Directory.GetFiles(existing).ToDictionary(f => f, File.ReadAllBytes);
        Assert.ThrowsAny<SystemException>(() => TextPreparation.Prepare([good, bad], BpeTextTokenizer.Gpt2(), existing, blockChars: 4096));
        var after = Directory.GetFiles(existing);
        Assert.Equal(before.Keys.Order(), after.Order());
        foreach (var f in after) Assert.Equal(before[f], File.ReadAllBytes(f));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(7)]
    [InlineData(100)]
    [InlineData(TextPreparation.DefaultBlockChars)]
    public void StreamingGivesTheIdsOfTheWholeDocument(int blockChars)
    {
        using var dir = new TempDirectory();
        var tok = BpeTextTokenizer.Gpt2();
        var doc = TokenizerTests.Mixed + Document(5, blockChars == 1 ? 20_000 : 300_000) + "\n\n\n";
        File.WriteAllText(dir.File("long.txt"), doc);
        var result = TextPreparation.Prepare([dir.File("long.txt")], tok, dir.Path, valFraction: 0, blockChars: blockChars);
        Assert.Equal(tok.Encode(doc), ReadAll(result.TrainPath, tok.VocabSize));
        Assert.True(result.PeakBufferedChars < doc.Length / 2, $"held {result.PeakBufferedChars} of {doc.Length} characters");
    }

    [Fact]
    public void MemoryIsBoundedByBlockAndWindowNotByInputSize()
    {
        using var dir = new TempDirectory();
        var path = dir.File("big.txt");
        using (var writer = new StreamWriter(path, false, new UTF8Encoding(false)))
            for (var i = 0; i < 40; i++) writer.Write(Document(100 + i, 200_000)); // 8 M characters
        var result = TextPreparation.Prepare([path], BpeTextTokenizer.Gpt2(), dir.Path, valFraction: 0.01);
        Assert.True(result.TrainTokens + result.ValTokens > 1_000_000);
        Assert.InRange(result.PeakBufferedChars, 1, TextPreparation.DefaultBlockChars + 1000);
    }

    [Fact]
    public void TextWithoutAnySplitPointIsRefused()
    {
        using var dir = new TempDirectory();
        File.WriteAllText(dir.File("run.txt"), new string('x', 5000));
        var e = Assert.Throws<InvalidDataException>(() =>
            TextPreparation.Prepare([dir.File("run.txt")], BpeTextTokenizer.Gpt2(), dir.File("o"), blockChars: 100, windowChars: 1000));
        Assert.Contains("without a point", e.Message);
        Assert.False(Directory.Exists(dir.File("o")));
    }
}
