// BERT config presets, parameter counts, config.json parsing, and the refusal of GPT-2 configs.
using L2L.Model.Bert;
using Xunit;

namespace L2L.Model.Tests;

public class BertConfigTests
{
    // bert-base by hand (V 30522, P 512, types 2, H 768, I 3072, L 12):
    //   embeddings (30522 + 512 + 2)·768 + 2·768            =  23,837,184
    //   block 4·768² + 2·768·3072 + 9·768 + 3072 = 7,087,872; ×12 = 85,054,464
    //   head 768² + 3·768 + 30522                           =     622,650
    //   total                                                = 109,514,298, the figure PyTorch reports for
    //   BertForMaskedLM("bert-base-uncased") (no pooler, decoder weight tied to the word embedding).
    [Theory]
    [InlineData("bert-tiny", 129_604L)]
    [InlineData("bert-base", 109_514_298L)]
    [InlineData("bert-large", 335_174_458L)]
    public void PresetParameterCountsMatchBertForMaskedLMWithTiedDecoder(string name, long expected)
    {
        var config = BertConfig.Preset(name);
        Assert.Equal(expected, config.ParameterCount);
        Assert.Equal(expected, SumOfHuggingFaceTensorSizes(config));
    }

    // The parameter count summed tensor by tensor over BertForMaskedLM's state dict, independently of the closed formula.
    private static long SumOfHuggingFaceTensorSizes(BertConfig c)
    {
        long h = c.HiddenSize, i = c.IntermediateSize;
        var shapes = new List<long[]>
        {
            new[] { (long)c.VocabSize, h }, new[] { (long)c.MaxPositions, h }, new[] { (long)c.TypeVocabSize, h },
            new[] { h }, new[] { h },
        };
        for (var l = 0; l < c.Layers; l++)
        {
            foreach (var _ in new[] { "query", "key", "value", "attention.output.dense" })
            {
                shapes.Add([h, h]);
                shapes.Add([h]);
            }
            shapes.Add([h]); shapes.Add([h]);           // attention.output.LayerNorm
            shapes.Add([i, h]); shapes.Add([i]);        // intermediate.dense
            shapes.Add([h, i]); shapes.Add([h]);        // output.dense
            shapes.Add([h]); shapes.Add([h]);           // output.LayerNorm
        }
        shapes.Add([h, h]); shapes.Add([h]);            // cls.predictions.transform.dense
        shapes.Add([h]); shapes.Add([h]);               // cls.predictions.transform.LayerNorm
        shapes.Add([(long)c.VocabSize]);                // cls.predictions.bias
        return shapes.Sum(s => s.Aggregate(1L, (a, b) => a * b));
    }

    [Fact]
    public void PresetsHaveTheDocumentedSizes()
    {
        Assert.Equal(["bert-tiny", "bert-base", "bert-large"], BertConfig.PresetNames);
        Assert.Equal(new BertConfig(30522, 768, 12, 12, 3072, 512, 2, 1e-12f, 0, 103), BertConfig.Preset("bert-base"));
        Assert.Equal(new BertConfig(30522, 1024, 24, 16, 4096, 512, 2, 1e-12f, 0, 103), BertConfig.Preset("BERT-Large"));
        var tiny = BertConfig.Preset("bert-tiny");
        Assert.Equal(new BertConfig(260, 64, 2, 4, 256, 128, 2, 1e-12f, 256, 257), tiny);
        // Byte symbols 0..255 stay ordinary tokens; padding and [MASK] lie above them.
        Assert.True(tiny.PadTokenId > 255 && tiny.MaskTokenId > 255);
        Assert.Equal(64, BertConfig.Preset("bert-base").HeadSize);
        Assert.Equal(16, tiny.HeadSize);
        foreach (var name in BertConfig.PresetNames) BertConfig.Preset(name).Validate();
        Assert.Equal(8, tiny.WithLayers(8).Layers);
    }

    [Fact]
    public void UnknownPresetListsTheKnownOnes()
    {
        var e = Assert.Throws<ArgumentException>(() => BertConfig.Preset("bert-huge"));
        Assert.Contains("bert-huge", e.Message);
        foreach (var name in BertConfig.PresetNames) Assert.Contains(name, e.Message);
    }

    [Fact]
    public void JsonRoundTripsThroughAFile()
    {
        using var dir = new TempDirectory();
        var config = new BertConfig(1000, 48, 3, 6, 100, 77, 3, 1e-6f, 5, 7);
        var path = dir.File("config.json");
        config.Save(path);
        Assert.Equal(config, BertConfig.Load(path));
        Assert.Equal(config, BertConfig.FromJson(config.ToJson()));
        Assert.Contains("\"model_type\": \"bert\"", config.ToJson());
        Assert.Contains("\"hidden_act\": \"gelu\"", config.ToJson());
        Assert.Single(Directory.GetFiles(dir.Path)); // no temp file left behind
        foreach (var name in BertConfig.PresetNames)
            Assert.Equal(BertConfig.Preset(name), BertConfig.FromJson(BertConfig.Preset(name).ToJson()));
        Assert.Empty(config.Differences(BertConfig.Load(path)));
        Assert.Equal(["num_hidden_layers: 3 vs 4"], config.Differences(config.WithLayers(4)));
    }

    [Fact]
    public void HuggingFaceConfigLoadsIgnoringOtherKeysWithDefaults()
    {
        // bert-base-uncased's config.json (no mask_token_id there: it defaults to 103).
        const string json = """
            {
              "architectures": ["BertForMaskedLM"],
              "attention_probs_dropout_prob": 0.1,
              "gradient_checkpointing": false,
              "hidden_act": "gelu",
              "hidden_dropout_prob": 0.1,
              "hidden_size": 768,
              "initializer_range": 0.02,
              "intermediate_size": 3072,
              "layer_norm_eps": 1e-12,
              "max_position_embeddings": 512,
              "model_type": "bert",
              "num_attention_heads": 12,
              "num_hidden_layers": 12,
              "pad_token_id": 0,
              "position_embedding_type": "absolute",
              "transformers_version": "4.6.0.dev0",
              "type_vocab_size": 2,
              "use_cache": true,
              "vocab_size": 30522
            }
            """;
        Assert.Equal(BertConfig.Preset("bert-base"), BertConfig.FromJson(json));
        var minimal = """{"model_type": "bert", "vocab_size": 200, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16, "max_position_embeddings": 9, "type_vocab_size": 1}""";
        Assert.Equal(new BertConfig(200, 8, 1, 2, 16, 9, 1, 1e-12f, 0, 103), BertConfig.FromJson(minimal));
    }

    [Fact]
    public void Gpt2ConfigIsRefusedAsNotBert()
    {
        var gpt2 = GptConfig.Preset("gpt2").ToJson();
        var e = Assert.Throws<InvalidDataException>(() => BertConfig.FromJson(gpt2, "gpt/config.json"));
        Assert.Contains("not a BERT config", e.Message);
        Assert.Contains("\"gpt2\"", e.Message);
        Assert.Contains("gpt/config.json", e.Message);
        // Without model_type, even with every BERT key present.
        var untyped = BertConfig.Preset("bert-tiny").ToJson().Replace("\"model_type\": \"bert\",", "");
        Assert.Contains("not a BERT config", Assert.Throws<InvalidDataException>(() => BertConfig.FromJson(untyped)).Message);
    }

    [Fact]
    public void BertConfigIsRefusedByTheGpt2Loader()
    {
        var e = Assert.Throws<InvalidDataException>(() => GptConfig.FromJson(BertConfig.Preset("bert-base").ToJson(), "bert/config.json"));
        Assert.Contains("BERT config", e.Message);
        Assert.Contains("not a GPT-2 config", e.Message);
        Assert.Contains("bert/config.json", e.Message);
    }

    [Fact]
    public void MalformedJsonNamesTheSource()
    {
        var e = Assert.Throws<InvalidDataException>(() => BertConfig.FromJson("{ \"vocab_size\": 12,, ", "my/config.json"));
        Assert.Contains("my/config.json", e.Message);
        Assert.Contains("not valid JSON", e.Message);
        Assert.Throws<InvalidDataException>(() => BertConfig.FromJson("[1, 2]"));
    }

    private const string Good = """ "model_type": "bert", "vocab_size": 200, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16, "max_position_embeddings": 9, "type_vocab_size": 2 """;

    [Theory]
    [InlineData(""" "model_type": "bert", "vocab_size": 200, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16, "max_position_embeddings": 9, "type_vocab_size": 2 """, "hidden_size")]
    [InlineData(""" "model_type": "bert", "vocab_size": 200, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16, "max_position_embeddings": 9 """, "type_vocab_size")]
    public void MissingKeyIsNamed(string body, string key)
    {
        var e = Assert.Throws<InvalidDataException>(() => BertConfig.FromJson("{" + body + "}", "c.json"));
        Assert.Contains("missing", e.Message);
        Assert.Contains($"\"{key}\"", e.Message);
        Assert.Contains("c.json", e.Message);
    }

    [Theory]
    [InlineData("\"vocab_size\": \"many\"", "vocab_size")]
    [InlineData("\"hidden_size\": 8.5", "hidden_size")]
    [InlineData("\"num_hidden_layers\": 0", "num_hidden_layers")]
    [InlineData("\"num_attention_heads\": 3", "num_attention_heads")] // 8 is not a multiple of 3
    [InlineData("\"intermediate_size\": -4", "intermediate_size")]
    [InlineData("\"max_position_embeddings\": 0", "max_position_embeddings")]
    [InlineData("\"layer_norm_eps\": -1", "layer_norm_eps")]
    [InlineData("\"pad_token_id\": 200", "pad_token_id")]
    [InlineData("\"mask_token_id\": -1", "mask_token_id")]
    [InlineData("\"hidden_act\": \"gelu_new\"", "hidden_act")]
    [InlineData("\"hidden_act\": \"relu\"", "hidden_act")]
    [InlineData("\"hidden_act\": 3", "hidden_act")]
    public void InvalidValueIsNamed(string overrideKey, string key)
    {
        // JsonElement lookups take the last of duplicated keys, so the override goes last.
        var json = "{" + Good + ", " + overrideKey + "}";
        var e = Assert.Throws<InvalidDataException>(() => BertConfig.FromJson(json, "c.json"));
        Assert.Contains(key, e.Message);
        Assert.Contains("c.json", e.Message);
    }

    [Fact]
    public void HiddenSizeNotDivisibleByHeadsIsRefused()
    {
        var e = Assert.Throws<InvalidDataException>(() => new BertConfig(200, 10, 1, 4, 40, 8, 2).Validate());
        Assert.Contains("multiple", e.Message);
        Assert.Contains("num_attention_heads", e.Message);
        new BertConfig(200, 12, 1, 4, 40, 8, 2).Validate();
        Assert.Throws<InvalidDataException>(() => new BertConfig(200, 12, 1, 4, 40, 8, 2, 1e-12f, 5, 5).Validate());
    }

    [Fact]
    public void LoadOfMissingFileSaysSo()
    {
        using var dir = new TempDirectory();
        var e = Assert.Throws<FileNotFoundException>(() => BertConfig.Load(dir.File("nope.json")));
        Assert.Contains("nope.json", e.Message);
    }
}
