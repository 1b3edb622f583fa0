// Masked-language-model batches: on-the-fly masking statistics and determinism, and labels files.
using L2L.Model.Bert;
using L2L.Model.Data;
using Xunit;

namespace L2L.Model.Tests;

public class MlmBatchLoaderTests
{
    private static readonly BertConfig Tiny = BertConfig.Preset("bert-tiny"); // vocab 260, pad 256, [MASK] 257

    /// <summary>Tokens held in memory, read as a loop.</summary>
    private sealed class ArraySource(int[] tokens, int vocabSize) : ITokenSource
    {
        public int VocabSize => vocabSize;
        public long Length => tokens.Length;
        public string Description => $"array ({tokens.Length} tokens)";

        public void Read(long start, Span<int> destination)
        {
            for (var i = 0; i < destination.Length; i++) destination[i] = tokens[(start + i) % tokens.Length];
        }
    }

    /// <summary>The synthetic corpus with every 9th token replaced by padding.</summary>
    private static ArraySource PaddedCorpus(int length)
    {
        var corpus = new SyntheticCorpus(256, length, seed: 5);
        var tokens = new int[length];
        corpus.Read(0, tokens);
        for (var i = 4; i < length; i += 9) tokens[i] = Tiny.PadTokenId;
        return new ArraySource(tokens, Tiny.VocabSize);
    }

    [Fact]
    public void OnTheFlyMaskingSelects15PercentWithThe80_10_10Split()
    {
        const int b = 32, t = 128, steps = 100; // 409,600 positions, 364k of them not padding
        var source = PaddedCorpus(b * t * steps);
        var loader = MlmBatchLoader.For(Tiny, source, null, b, t, seed: 1337);
        var inputs = new int[b * t];
        var targets = new int[b * t];
        var original = new int[t];
        long positions = 0, pads = 0, selected = 0, masked = 0, kept = 0, random = 0;
        var randomIds = new long[Tiny.VocabSize];
        for (var step = 0; step < steps; step++)
        {
            loader.Fill(step, inputs, targets);
            for (var row = 0; row < b; row++)
            {
                source.Read(loader.WindowStart((long)step * b + row), original);
                for (var i = 0; i < t; i++)
                {
                    int o = original[i], x = inputs[row * t + i], y = targets[row * t + i];
                    positions++;
                    if (o == Tiny.PadTokenId)
                    {
                        pads++;
                        Assert.Equal(MlmBatchLoader.IgnoreIndex, y); // padding is never a target ...
                        Assert.Equal(o, x);                          // ... and never replaced
                        continue;
                    }
                    if (y == MlmBatchLoader.IgnoreIndex)
                    {
                        Assert.Equal(o, x); // unselected positions are untouched
                        continue;
                    }
                    Assert.Equal(o, y); // the label is the original token
                    selected++;
                    if (x == Tiny.MaskTokenId) masked++;
                    else if (x == o) kept++; // includes the 1-in-259 random draws that hit the original id
                    else
                    {
                        random++;
                        Assert.InRange(x, 0, Tiny.VocabSize - 1);
                        Assert.NotEqual(Tiny.PadTokenId, x); // a replacement never becomes padding
                        randomIds[x]++;
                    }
                }
            }
        }

        // Binomial standard deviations: 0.0006 for the selected fraction (364k trials), 0.0016 / 0.0012 for
        // the shares of the ~55k selected positions; the bounds below are more than 6 of them.
        var nonPad = positions - pads;
        Assert.InRange((double)selected / nonPad, 0.14, 0.16);
        Assert.InRange((double)masked / selected, 0.79, 0.81);
        Assert.InRange((double)random / selected, 0.09, 0.11);
        Assert.InRange((double)kept / selected, 0.09, 0.11);

        // Random replacements are uniform over the 259 non-pad ids; [MASK] drawn at random is counted as masked
        // and the original id as kept, which leaves 258 ids observable here, ~21 draws each.
        var observable = Enumerable.Range(0, Tiny.VocabSize).Where(id => id != Tiny.PadTokenId && id != Tiny.MaskTokenId).ToArray();
        Assert.All(observable, id => Assert.True(randomIds[id] > 0, $"random id {id} never drawn"));
        var expected = (double)random / observable.Length;
        var chiSquare = observable.Sum(id => (randomIds[id] - expected) * (randomIds[id] - expected) / expected);
        Assert.True(chiSquare < 257 + 6 * Math.Sqrt(2 * 257), $"chi-square {chiSquare:F1} over 257 degrees of freedom");
    }

    [Fact]
    public void MaskingIsDeterministicPerSeedAndDiffersAcrossSeedsAndSteps()
    {
        // Every window of a constant source is the same, so any difference between steps is the masking's own.
        const int b = 4, t = 64;
        var source = new ArraySource(Enumerable.Repeat(7, t).ToArray(), Tiny.VocabSize);
        MlmBatchLoader Loader(int seed) => MlmBatchLoader.For(Tiny, source, null, b, t, seed: seed);
        (int[] Inputs, int[] Targets) Batch(MlmBatchLoader loader, long step)
        {
            var inputs = new int[b * t];
            var targets = new int[b * t];
            loader.Fill(step, inputs, targets);
            return (inputs, targets);
        }

        var a = Loader(11);
        var again = Loader(11);
        foreach (var step in new long[] { 0, 5, 123_456_789, 5 }) // in any order, as a resumed run asks
        {
            var (i1, t1) = Batch(a, step);
            var (i2, t2) = Batch(again, step);
            Assert.Equal(i1, i2);
            Assert.Equal(t1, t2);
        }
        Assert.NotEqual(Batch(a, 0).Targets, Batch(Loader(12), 0).Targets);
        Assert.NotEqual(Batch(a, 0).Targets, Batch(a, 1).Targets);
        // Sequences of one step differ from each other too.
        var (_, targets) = Batch(a, 3);
        Assert.NotEqual(targets[..t], targets[t..(2 * t)]);
    }

    [Fact]
    public void ASequenceIsTheSameWhetherFilledAloneOrWithItsStep()
    {
        // Micro-batches may fill their own rows: row b of Fill equals FillSequence(step, b).
        const int b = 6, t = 33;
        var loader = MlmBatchLoader.For(Tiny, PaddedCorpus(5000), null, b, t, shuffle: true, seed: 3);
        var inputs = new int[b * t];
        var targets = new int[b * t];
        loader.Fill(17, inputs, targets);
        var rowInputs = new int[t];
        var rowTargets = new int[t];
        for (var row = b - 1; row >= 0; row--)
        {
            loader.FillSequence(17, row, rowInputs, rowTargets);
            Assert.Equal(inputs[(row * t)..((row + 1) * t)], rowInputs);
            Assert.Equal(targets[(row * t)..((row + 1) * t)], rowTargets);
        }
    }

    [Fact]
    public void WindowsHaveNoShiftAndWrap()
    {
        const int b = 3, t = 8, length = 100;
        var tokens = Enumerable.Range(0, length).ToArray();
        var labels = tokens.Select(i => i % 4 == 0 ? (i * 3) % 256 : MlmBatchLoader.LabelFileIgnore).ToArray();
        var loader = new MlmBatchLoader(new ArraySource(tokens, 256), new ArraySource(labels, 65536), b, t, 256, 255, 254);
        Assert.True(loader.HasLabelSource);
        var inputs = new int[b * t];
        var targets = new int[b * t];
        for (long step = 0; step < 9; step++)
        {
            loader.Fill(step, inputs, targets);
            for (var row = 0; row < b; row++)
                for (var i = 0; i < t; i++)
                {
                    var position = (int)(((step * b + row) * t + i) % length);
                    Assert.Equal(position, inputs[row * t + i]); // the data as it is, no shift
                    Assert.Equal(position % 4 == 0 ? (position * 3) % 256 : MlmBatchLoader.IgnoreIndex, targets[row * t + i]);
                }
        }
        // Step 4, row 0 is window 12, starting at 96: it runs off the end and continues at 0.
        loader.Fill(4, inputs, targets);
        Assert.Equal([96, 97, 98, 99, 0, 1, 2, 3], inputs[..8]);
        Assert.Equal([(96 * 3) % 256, -1, -1, -1, 0, -1, -1, -1], targets[..8]);
    }

    [Fact]
    public void LabelsFileIsReadAlignedWithTheDataFile()
    {
        using var dir = new TempDirectory();
        const int length = 37; // windows of 5 wrap unevenly
        var data = Enumerable.Range(0, length).Select(i => (ushort)(i * 11 % 256)).ToArray();
        var labels = Enumerable.Range(0, length).Select(i => i % 3 == 0 ? (ushort)(i % 250) : (ushort)65535).ToArray();
        TokenData.WriteBin(dir.File("data.bin"), data);
        TokenData.WriteBin(dir.File("labels.bin"), labels);
        using var dataSource = (IDisposable)TokenData.Open(dir.File("data.bin"), Tiny.VocabSize);
        using var labelSource = (IDisposable)MlmBatchLoader.OpenLabels(dir.File("labels.bin"));
        var loader = MlmBatchLoader.For(Tiny, (ITokenSource)dataSource, (ITokenSource)labelSource, 2, 5);
        var inputs = new int[10];
        var targets = new int[10];
        for (long step = 0; step < 8; step++)
        {
            loader.Fill(step, inputs, targets);
            for (var k = 0; k < 10; k++)
            {
                var position = (int)((step * 10 + k) % length);
                Assert.Equal(data[position], inputs[k]);
                Assert.Equal(labels[position] == 65535 ? MlmBatchLoader.IgnoreIndex : labels[position], targets[k]);
            }
        }
    }

    [Fact]
    public void LabelsOfAnotherLengthAreAClearError()
    {
        var data = new ArraySource(new int[100], 256);
        var labels = new ArraySource(Enumerable.Repeat(MlmBatchLoader.LabelFileIgnore, 99).ToArray(), 65536);
        var e = Assert.Throws<InvalidDataException>(() => new MlmBatchLoader(data, labels, 2, 8, 260, 256, 257));
        Assert.Contains("99", e.Message);
        Assert.Contains("100", e.Message);
        Assert.Contains("one label per data token", e.Message);
    }

    [Fact]
    public void LabelOutsideTheVocabularyIsAClearError()
    {
        var labels = Enumerable.Repeat(MlmBatchLoader.LabelFileIgnore, 50).ToArray();
        labels[31] = 300;
        var e = Assert.Throws<InvalidDataException>(() =>
            new MlmBatchLoader(new ArraySource(new int[50], 256), new ArraySource(labels, 65536), 1, 8, 260, 256, 257));
        Assert.Contains("label 300 at position 31", e.Message);
        Assert.Contains("65535", e.Message);
    }

    [Fact]
    public void LabelsFileMustBeAnLlmcBinFile()
    {
        using var dir = new TempDirectory();
        File.WriteAllText(dir.File("labels.txt"), "not token ids");
        var e = Assert.Throws<InvalidDataException>(() => MlmBatchLoader.OpenLabels(dir.File("labels.txt")));
        Assert.Contains("labels.txt", e.Message);
        Assert.Contains("not an llm.c .bin", e.Message);
        Assert.Throws<FileNotFoundException>(() => MlmBatchLoader.OpenLabels(dir.File("missing.bin")));
    }

    [Fact]
    public void WrongBufferSizesAndIdsAreRejected()
    {
        var source = new ArraySource(new int[100], 256);
        var loader = new MlmBatchLoader(source, null, 2, 4, 260, 256, 257);
        Assert.Throws<ArgumentException>(() => loader.Fill(0, new int[7], new int[8]));
        Assert.Throws<ArgumentException>(() => loader.Fill(0, new int[8], new int[9]));
        Assert.Throws<ArgumentOutOfRangeException>(() => loader.FillSequence(0, 2, new int[4], new int[4]));
        Assert.Throws<ArgumentOutOfRangeException>(() => new MlmBatchLoader(source, null, 2, 4, 260, 260, 257));
        Assert.Throws<ArgumentOutOfRangeException>(() => new MlmBatchLoader(source, null, 0, 4, 260, 256, 257));
    }
}
