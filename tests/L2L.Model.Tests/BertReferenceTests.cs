// Checks of the double-precision BERT reference itself, through properties that follow from the model's definition.
using L2L.TestSupport.Reference;
using Xunit;

namespace L2L.Model.Tests;

public class BertReferenceTests
{
    private static readonly BertReference.Dims D = new(VocabSize: 11, Hidden: 8, Layers: 2, Heads: 2, Intermediate: 12,
        MaxPositions: 10, TypeVocabSize: 2, LayerNormEps: 1e-12, PadTokenId: 0);

    [Fact]
    public void WithEveryWeightZeroTheLossIsThatOfTheDecoderBiasAlone()
    {
        // Zero projections and embeddings make every hidden state a function of the biases only, the same at
        // every position, and the decoder (the zero word embedding) adds nothing to cls.predictions.bias. So each
        // labelled position costs logsumexp(bias) - bias[label].
        var parameters = BertReference.RandomParameters(D, seed: 1);
        foreach (var (name, tensor) in parameters)
            if (name.EndsWith(".weight", StringComparison.Ordinal) && !name.Contains("LayerNorm", StringComparison.Ordinal))
                Array.Clear(tensor);
        int[] ids = [3, 0, 7, 7, 0, 0, 2, 9, 1, 4];
        int[] labels = [5, -1, -1, 10, -1, -1, 0, -1, 3, -1];
        var result = BertReference.Forward(parameters, D, ids, null, labels, 2, 5);

        var bias = parameters["cls.predictions.bias"].Select(v => (double)v).ToArray();
        var logPartition = Math.Log(bias.Sum(Math.Exp));
        var expected = new[] { 5, 10, 0, 3 }.Average(label => logPartition - bias[label]);
        Assert.Equal(4, result.LabelCount);
        Assert.Equal(expected, result.Loss, 1e-12);
        for (var r = 1; r < 10; r++)
            for (var c = 0; c < D.Hidden; c++)
                Assert.Equal(result.Hidden[c], result.Hidden[r * D.Hidden + c], 1e-12);
    }

    [Fact]
    public void WithoutPositionEmbeddingsPermutingTokensPermutesTheOutputs()
    {
        // Attention is bidirectional and treats keys alike, so without position information the model is
        // permutation-equivariant: the loss is unchanged and hidden states follow the tokens, padding included.
        var parameters = BertReference.RandomParameters(D, seed: 2);
        Array.Clear(parameters["bert.embeddings.position_embeddings.weight"]);
        int[] ids = [4, 0, 9, 2, 2, 0, 7];
        int[] types = [0, 0, 1, 1, 0, 1, 0];
        int[] labels = [-1, -1, 9, 6, -1, -1, 1];
        int[] order = [6, 2, 5, 0, 3, 1, 4];
        var baseline = BertReference.Forward(parameters, D, ids, types, labels, 1, 7);
        var permuted = BertReference.Forward(parameters, D, order.Select(i => ids[i]).ToArray(), order.Select(i => types[i]).ToArray(),
            order.Select(i => labels[i]).ToArray(), 1, 7);
        Assert.Equal(baseline.Loss, permuted.Loss, 1e-12);
        for (var r = 0; r < 7; r++)
            for (var c = 0; c < D.Hidden; c++)
                Assert.Equal(baseline.Hidden[order[r] * D.Hidden + c], permuted.Hidden[r * D.Hidden + c], 1e-12);
    }

    [Fact]
    public void PaddingKeysAreNotAttended()
    {
        // Without position embeddings, the real tokens of [a, pad, b, pad, c] see exactly what those of [a, b, c] see.
        var parameters = BertReference.RandomParameters(D, seed: 3);
        Array.Clear(parameters["bert.embeddings.position_embeddings.weight"]);
        var padded = BertReference.Forward(parameters, D, [5, 0, 8, 0, 3], null, [-1, -1, -1, -1, -1], 1, 5);
        var compact = BertReference.Forward(parameters, D, [5, 8, 3], null, [-1, -1, -1], 1, 3);
        int[] real = [0, 2, 4];
        for (var r = 0; r < 3; r++)
            for (var c = 0; c < D.Hidden; c++)
                Assert.Equal(compact.Hidden[r * D.Hidden + c], padded.Hidden[real[r] * D.Hidden + c], 1e-12);
        Assert.True(double.IsNaN(padded.Loss));
        Assert.Equal(0, padded.LabelCount);

        // With position embeddings: changing what a padding position holds (its type) leaves the other positions alone.
        var withPositions = BertReference.RandomParameters(D, seed: 4);
        var a = BertReference.Forward(withPositions, D, [5, 0, 8, 0, 3], [0, 0, 0, 0, 0], [1, -1, 2, -1, 3], 1, 5);
        var b = BertReference.Forward(withPositions, D, [5, 0, 8, 0, 3], [0, 1, 0, 1, 0], [1, -1, 2, -1, 3], 1, 5);
        Assert.Equal(a.Loss, b.Loss, 1e-12);
        Assert.NotEqual(a.Hidden[D.Hidden], b.Hidden[D.Hidden]); // the padding position itself still changes
    }

    [Fact]
    public void AttentionIsBidirectional()
    {
        // Changing the last token changes the first position's output (a causal model's would not move).
        var parameters = BertReference.RandomParameters(D, seed: 5);
        var a = BertReference.Forward(parameters, D, [3, 4, 5, 6], null, [2, -1, -1, -1], 1, 4);
        var b = BertReference.Forward(parameters, D, [3, 4, 5, 7], null, [2, -1, -1, -1], 1, 4);
        Assert.True(Math.Abs(a.Loss - b.Loss) > 1e-6, $"loss at position 0 moved by only {Math.Abs(a.Loss - b.Loss):g3}");
    }

    [Fact]
    public void LossIsTheMeanOverLabelledPositionsOnly()
    {
        var parameters = BertReference.RandomParameters(D, seed: 6);
        int[] ids = [1, 2, 3, 0, 4, 5, 6, 7];
        var result = BertReference.Forward(parameters, D, ids, null, [-1, 3, -1, -1, 10, -1, -1, 1], 2, 4);
        Assert.Equal(3, result.LabelCount);
        // Each labelled position's own cross-entropy from the returned logits; the mean is over the whole batch of
        // both sequences, not a mean of per-sequence means (1 label in the first, 2 in the second).
        double Ce(int row, int label)
        {
            var logits = result.Logits.AsSpan(row * D.VocabSize, D.VocabSize).ToArray();
            var max = logits.Max();
            return max + Math.Log(logits.Sum(z => Math.Exp(z - max))) - logits[label];
        }
        Assert.Equal((Ce(1, 3) + Ce(4, 10) + Ce(7, 1)) / 3, result.Loss, 1e-12);
        // Labels elsewhere do not matter when ignored: a different ignore index ignores different positions.
        var other = BertReference.Forward(parameters, D, ids, null, [99, 3, 99, 99, 10, 99, 99, 1], 2, 4, ignoreIndex: 99);
        Assert.Equal(result.Loss, other.Loss, 1e-15);
    }

    [Fact]
    public void NamesWithoutTheBertPrefixAreAcceptedAndMissingOnesNamed()
    {
        var parameters = BertReference.RandomParameters(D, seed: 7);
        var unprefixed = parameters.ToDictionary(p => p.Key.StartsWith("bert.", StringComparison.Ordinal) ? p.Key[5..] : p.Key, p => p.Value);
        int[] ids = [1, 2, 0];
        int[] labels = [4, -1, -1];
        Assert.Equal(BertReference.Forward(parameters, D, ids, null, labels, 1, 3).Loss, BertReference.Forward(unprefixed, D, ids, null, labels, 1, 3).Loss);
        parameters.Remove("bert.encoder.layer.1.attention.self.value.bias");
        var e = Assert.Throws<KeyNotFoundException>(() => BertReference.Forward(parameters, D, ids, null, labels, 1, 3));
        Assert.Contains("bert.encoder.layer.1.attention.self.value.bias", e.Message);
        Assert.Equal(5 + 16 * D.Layers + 5, BertReference.TensorShapes(D).Count);
    }
}
