// The built-in Markov corpus: determinism, structure, and the exactness of its entropy rate.
using L2L.Model.Data;
using Xunit;

namespace L2L.Model.Tests;

public class SyntheticCorpusTests
{
    [Fact]
    public void EmpiricalConditionalEntropyMatchesTheEntropyRate()
    {
        var corpus = new SyntheticCorpus(vocabSize: 256, length: 1 << 20, seed: 1234);
        var tokens = new int[corpus.Length];
        corpus.Read(0, tokens);

        var pairs = new long[256 * 256];
        var rows = new long[256];
        for (var i = 0; i + 1 < tokens.Length; i++)
        {
            pairs[tokens[i] * 256 + tokens[i + 1]]++;
            rows[tokens[i]]++;
        }
        double h = 0;
        long n = tokens.Length - 1;
        for (var a = 0; a < 256; a++)
        for (var b = 0; b < 256; b++)
        {
            var c = pairs[a * 256 + b];
            if (c > 0) h -= (double)c / n * Math.Log((double)c / rows[a]);
        }

        Assert.InRange(h, corpus.EntropyRateNats - 0.01, corpus.EntropyRateNats + 0.01);
        // Far below the entropy of a uniform choice, so a model has something to learn.
        Assert.True(corpus.EntropyRateNats < Math.Log(256) / 2);
        // Every symbol occurs and has at most K successors.
        Assert.All(rows, r => Assert.True(r > 0));
        for (var a = 0; a < 256; a++)
            Assert.InRange(pairs.AsSpan(a * 256, 256).ToArray().Count(c => c > 0), 1, corpus.Successors);
    }

    [Fact]
    public void EntropyRateIsTheRowEntropy()
    {
        var corpus = new SyntheticCorpus(vocabSize: 5, length: 1000, seed: 1);
        Assert.Equal(5, corpus.Successors);
        Assert.Equal(1.0, corpus.RowProbabilities.Sum(), 12);
        Assert.Equal(-corpus.RowProbabilities.Sum(p => p * Math.Log(p)), corpus.EntropyRateNats, 12);
        Assert.Equal(SyntheticCorpus.MaxSuccessors, new SyntheticCorpus().Successors);
    }

    [Fact]
    public void SameSeedSameTokens()
    {
        var a = new int[5000];
        var b = new int[5000];
        var c = new int[5000];
        new SyntheticCorpus(64, 5000, 9).Read(0, a);
        new SyntheticCorpus(64, 5000, 9).Read(0, b);
        new SyntheticCorpus(64, 5000, 10).Read(0, c);
        Assert.Equal(a, b);
        Assert.NotEqual(a, c);
        Assert.All(a, t => Assert.InRange(t, 0, 63));
    }

    [Fact]
    public void ReadWrapsAround()
    {
        var corpus = new SyntheticCorpus(16, 100, 3);
        Assert.Equal(16, corpus.VocabSize);
        Assert.Equal(100, corpus.Length);
        var all = new int[100];
        corpus.Read(0, all);
        var wrapped = new int[250];
        corpus.Read(95, wrapped);
        for (var i = 0; i < wrapped.Length; i++) Assert.Equal(all[(95 + i) % 100], wrapped[i]);
        Assert.Contains("entropy rate", corpus.Description);
    }
}
